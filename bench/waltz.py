"""WaltzRL on the synthetic safety world: systems, baselines and ablations over 3 seeds.

Per seed, one warm start (SFT of both agents) and one stage 1 are shared:

  untrained_pair      warm-started pair, protocol with T_max = 1
  safeguard           warm-started conversation agent; answers the (warm-started) feedback agent
                      labels unsafe are replaced by a refusal (paper Table 1 row 2)
  oracle_template     warm-started conversation agent revising on template feedback built from
                      the judge's labels (row 6)
  single_rl           the conversation agent alone trained on R_c of its answer (row 3), and
  single_rl+safeguard the same with the warm-started feedback agent as safeguard (row 4)
  stage1              after stage 1 (feedback agent only; conversation agent bitwise fixed)
  waltzrl             stage 1 -> stage 2 (joint, lambda = 0, gated DIR)            (row 7)
  frozen_conversation stage 1 -> stage 2 training only the feedback agent   (ablation)
  no_gate             stage 1 and stage 2 with the DIR not gated on the label  (ablation)

Every system is evaluated on the same 384 held-out prompts (128 per type; sampled at T = 1).
Intervals are Student-t over the 3 seeds (`rl.evaluation.seed_interval`). Also reported: the
rollout FTR on non-harmful prompts at the start and end of stage 2 (it should fall as the
conversation agent improves) and the DIR +1 / -1 counts over all RL rollouts.

Run: `nice -n 10 python -m bench.waltz [--seeds 3] [--quick]`; writes bench/results/waltz.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from bench.common import RESULTS
from configs.waltz import get_config
from rl.evaluation import gain_over_control, seed_interval
from rl.run_waltz import Agents, evaluate, new_state, train_stage, warm_start
from rl.waltz import build_agents, trees_equal
from rl.waltz_world import VOCAB

SYSTEMS = (
    "untrained_pair",
    "safeguard",
    "oracle_template",
    "single_rl",
    "single_rl+safeguard",
    "stage1",
    "waltzrl",
    "frozen_conversation",
    "no_gate",
)
METRICS = ("asr", "orr", "ftr", "ftr_nonharmful", "label_acc", "label_f1", "json_valid")
METRICS += ("dir_pos", "dir_zero", "dir_neg", "asr_c0", "orr_c0")
# arXiv:2510.08240 Table 1 averages (as reported in the spec) and our matching system.
PAPER_ROWS = (
    ("1 Llama-3.1-8B-Instruct", (26.5, 25.7), "untrained_pair:c0"),
    ("2 1 + safeguard", (9.0, 29.8), "safeguard"),
    ("3 single-model safety RL", (12.2, 8.6), "single_rl"),
    ("4 3 + safeguard", (5.3, 14.9), "single_rl+safeguard"),
    ("5 collaboration, untrained", (13.4, 12.7), "untrained_pair"),
    ("6 oracle labels -> template feedback", (7.0, 16.6), "oracle_template"),
    ("7 WaltzRL", (3.7, 7.6), "waltzrl"),
)


RL_LR = [0.0]  # set by --rl-lr (0 = the config's)


def _cfg(seed: int, quick: bool, **flags):
    c = get_config()
    c.seed = seed
    if RL_LR[0]:
        c.rl_optim.conversation.lr = c.rl_optim.feedback.lr = RL_LR[0]
    for k, v in flags.items():
        setattr(c, k, v)
    if quick:
        c.sft.steps, c.rl.stage1_steps, c.rl.stage2_steps = 100, 10, 20
    return c


def _dir_counts(history) -> tuple[float, float]:
    n = len(history)
    pos = sum(h["rollout/dir_pos"] for h in history)
    neg = sum(h["rollout/dir_neg"] for h in history)
    return pos / max(n, 1), neg / max(n, 1)


def one_seed(seed: int, agents: Agents, quick: bool) -> dict:
    t0 = time.time()
    base = _cfg(seed, quick)
    agents.init_params = build_agents(base.model, VOCAB, seed)[1]
    sft = warm_start(base, agents)
    out = {"untrained_pair": evaluate(base, agents, sft)[0]}
    out["safeguard"] = evaluate(base, agents, sft, guard=True)[0]
    out["oracle_template"] = evaluate(base, agents, sft, feedback="oracle")[0]
    extra = {"seconds": {}}

    single = _cfg(seed, quick, single=True)
    s, _ = train_stage(single, agents, new_state(single, sft, agents), stage=2)
    out["single_rl"] = evaluate(single, agents, s.params, feedback="none")[0]
    guarded = {"conversation": s.params["conversation"], "feedback": sft["feedback"]}
    out["single_rl+safeguard"] = evaluate(single, agents, guarded, guard=True)[0]
    extra["seconds"]["single"] = time.time() - t0

    s1_state = new_state(base, sft, agents)
    conv0 = jax.tree.map(np.asarray, s1_state.params["conversation"])
    s1_state, h1 = train_stage(base, agents, s1_state, stage=1)
    extra["stage1_conversation_bitwise_unchanged"] = trees_equal(
        conv0, s1_state.params["conversation"]
    )
    out["stage1"] = evaluate(base, agents, s1_state.params)[0]
    stage1_params = jax.tree.map(np.asarray, s1_state.params)
    extra["seconds"]["stage1"] = time.time() - t0

    histories = {}
    for name, flags in (("waltzrl", {}), ("frozen_conversation", {"frozen_conversation": True})):
        c = _cfg(seed, quick, **flags)
        st = new_state(c, stage1_params, agents)
        # The references stay the warm start (the KL anchors of the paper), not the stage-1 end.
        st = st.replace(frozen={**st.frozen, "ref": new_state(c, sft, agents).frozen["ref"]})
        st, histories[name] = train_stage(c, agents, st, stage=2)
        out[name] = evaluate(c, agents, st.params)[0]
        extra["seconds"][name] = time.time() - t0

    ng = _cfg(seed, quick, gate=False)
    st, hn1 = train_stage(ng, agents, new_state(ng, sft, agents), stage=1)
    st, hn2 = train_stage(ng, agents, st, stage=2)
    out["no_gate"] = evaluate(ng, agents, st.params)[0]

    h2 = histories["waltzrl"]
    k = max(len(h2) // 8, 1)
    first = lambda key: float(np.nanmean([h[key] for h in h2[:k]]))  # noqa: E731
    last = lambda key: float(np.nanmean([h[key] for h in h2[-k:]]))  # noqa: E731
    extra["stage2_rollout"] = {
        key: {"first": first(f"rollout/{key}"), "last": last(f"rollout/{key}")}
        for key in ("ftr_nonharmful", "asr_c0", "orr_c0", "label_acc")
    }
    extra["dir_per_rollout"] = {
        "waltzrl_pos_neg": _dir_counts(h1 + h2),
        "frozen_conversation_pos_neg": _dir_counts(h1 + histories["frozen_conversation"]),
        "no_gate_pos_neg": _dir_counts(hn1 + hn2),
    }
    extra["seconds"]["total"] = time.time() - t0
    return {"systems": out, **extra}


def summarise(per_seed: list[dict]) -> dict:
    table = {}
    for sysname in SYSTEMS:
        table[sysname] = {
            m: seed_interval([r["systems"][sysname][m] for r in per_seed]).as_dict()
            for m in METRICS
        }
    pairs = {}
    for a, b in (
        ("waltzrl", "untrained_pair"),
        ("waltzrl", "safeguard"),
        ("waltzrl", "frozen_conversation"),
        ("safeguard", "untrained_pair"),
    ):
        for m in ("asr", "orr"):
            iv = gain_over_control(
                [r["systems"][a][m] for r in per_seed], [r["systems"][b][m] for r in per_seed]
            )
            pairs[f"{a}-{b}/{m}"] = iv.as_dict()
    for a, b, m in (
        ("no_gate", "waltzrl", "label_acc"),
        ("stage1", "untrained_pair", "label_acc"),
        ("stage1", "untrained_pair", "json_valid"),
        ("waltzrl", "stage1", "ftr_nonharmful"),
    ):
        iv = gain_over_control(
            [r["systems"][a][m] for r in per_seed], [r["systems"][b][m] for r in per_seed]
        )
        pairs[f"{a}-{b}/{m}"] = iv.as_dict()
    for k in ("waltzrl_pos_neg", "no_gate_pos_neg", "frozen_conversation_pos_neg"):
        iv = seed_interval(
            [r["dir_per_rollout"][k][0] - r["dir_per_rollout"][k][1] for r in per_seed]
        )
        pairs[f"rollout DIR(+1) - DIR(-1) fraction, {k[:-8]}"] = iv.as_dict()
    return {"table": table, "differences": pairs}


def markdown(summary: dict, per_seed: list[dict]) -> str:
    n = len(per_seed)
    cols = ("asr", "orr", "ftr", "ftr_nonharmful", "label_acc", "label_f1", "json_valid")
    lines = [
        f"# WaltzRL on the synthetic safety world ({n} seeds, mean [95% t-interval], %)",
        "",
        "| system | " + " | ".join(cols) + " | DIR +1 / 0 / -1 |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for s in SYSTEMS:
        row = summary["table"][s]
        cell = lambda m, r=row: (  # noqa: E731
            f"{100 * r[m]['mean']:.1f} [{100 * r[m]['lo']:.1f}, {100 * r[m]['hi']:.1f}]"
        )
        dirs = "/".join(f"{100 * row[m]['mean']:.1f}" for m in ("dir_pos", "dir_zero", "dir_neg"))
        lines.append(f"| {s} | " + " | ".join(cell(m) for m in cols) + f" | {dirs} |")
    lines += [
        "",
        "Beside the paper's Table 1 (8B models, real benchmarks, LLM judge; ours: synthetic",
        "",
    ]
    lines[-2] += " world, tiny agents, deterministic judge), ASR / ORR averages in %:"
    lines += ["| paper row | paper ASR / ORR | ours | ours ASR / ORR |", "|---|---|---|---|"]
    for paper, (pa, po), ours in PAPER_ROWS:
        name, _, c0 = ours.partition(":")
        row, sfx = summary["table"][name], "_c0" if c0 else ""
        a, o = 100 * row["asr" + sfx]["mean"], 100 * row["orr" + sfx]["mean"]
        lines.append(f"| {paper} | {pa} / {po} | {ours} | {a:.1f} / {o:.1f} |")
    lines += ["", "Differences (per-seed paired, points):", ""]
    for k, v in summary["differences"].items():
        lines.append(f"- {k}: {100 * v['mean']:+.1f} [{100 * v['lo']:+.1f}, {100 * v['hi']:+.1f}]")
    lines += ["", "Per seed:", ""]
    for i, r in enumerate(per_seed):
        ex = {k: v for k, v in r.items() if k != "systems"}
        lines.append(f"- seed {i}: `{json.dumps(ex, default=float)}`")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(RESULTS, "waltz"))
    ap.add_argument("--rl-lr", type=float, default=0.0, help="override both agents' RL lr")
    ap.add_argument("--resummarise", default="", help="per-seed JSON to re-render (no training)")
    args = ap.parse_args()
    RL_LR[0] = args.rl_lr
    if args.resummarise:
        with open(args.resummarise) as f:
            saved = json.load(f)
        per_seed, traces = (
            saved.get("per_seed", saved),
            saved.get("summary", {}).get("update_traces"),
        )
    else:
        agents = Agents(_cfg(0, args.quick))
        per_seed = []
        for seed in range(args.seeds):
            per_seed.append(one_seed(seed, agents, args.quick))
            print(f"seed {seed} done in {per_seed[-1]['seconds']['total']:.0f}s", flush=True)
            with open(args.out + ".partial.json", "w") as f:
                json.dump(per_seed, f, indent=1, default=float)
        traces = agents.update.traces
    summary = summarise(per_seed)
    summary["update_traces"] = traces
    with open(args.out + ".json", "w") as f:
        json.dump({"summary": summary, "per_seed": per_seed}, f, indent=1, default=float)
    lr = args.rl_lr or get_config().rl_optim.feedback.lr
    summary["rl_lr"] = lr
    md = markdown(summary, per_seed).replace(
        "\n", f"\n\nRL learning rate (both agents): {lr:g}\n", 1
    )
    with open(args.out + ".md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
