"""WaltzRL runner (`configs/waltz.py`): warm starts, stage 1, stage 2, baselines, evaluation.

Pipeline (arXiv:2510.08240, spec §3): SFT warm starts of both agents on the synthetic safety
world -> evaluation of the untrained pair and of the baselines (safeguard, oracle template
feedback) -> stage 1 (conversation agent frozen, alpha/lambda/gamma on) -> stage 2 (joint, lambda
= 0, DIR gated on the label) -> evaluation of the final answers on held-out prompts. Ablations are
config switches: `gate=False`, `frozen_conversation=True` (stage 2 trains only pi_f), and
`single=True` (a single-model safety RL baseline: pi_c alone on R_c of its first answer).

`bench/waltz.py` calls `warm_start`, `train_stage` and `evaluate` directly to share one warm start
and one stage 1 between the systems of a seed.
"""

from __future__ import annotations

import copy
import json
import os
import time

import jax
import numpy as np

from rl.sampling.autoregressive import make_sampler
from rl.waltz import (
    ROLES,
    agent_optimizer,
    build_agents,
    create_state,
    make_agent_update,
    trees_equal,
    waltz_update,
)
from rl.waltz_protocol import assemble, run_protocol
from rl.waltz_rewards import Trajectories, metrics, rewards, safeguard
from rl.waltz_sft import conversation_data, feedback_data, make_sft_update, sft_agent
from rl.waltz_world import (
    ANSWER_NEW,
    EOS,
    FEEDBACK_NEW,
    JUDGES,
    PAD,
    REFUSE,
    VOCAB,
    classifier_judge,
    make_prompts,
)


class Agents:
    """The compiled pieces shared by every stage and evaluation of one model config."""

    def __init__(self, config):
        c = config
        if c.judge == "classifier":
            classifier_judge(c.classifier_dir)  # raises unless local weights exist
        self.judge = JUDGES[c.judge]
        self.graphdef, self.init_params, self.rest = build_agents(c.model, VOCAB, c.seed)
        knobs = dict(eos_id=EOS, pad_id=PAD, temperature=float(c.rl.temperature))
        self.samplers = {
            "conversation": make_sampler(self.graphdef, max_new_tokens=ANSWER_NEW, **knobs),
            "feedback": make_sampler(self.graphdef, max_new_tokens=FEEDBACK_NEW, **knobs),
        }
        self.sft_update = None  # built on first use (see `warm_start`)
        self.update = make_agent_update(
            self.graphdef,
            agent_optimizer(c.rl_optim.conversation),
            clip_eps=float(c.rl.clip_eps),
            kl_coef=float(c.rl.kl_coef),
        )

    def agent_fn(self, role: str, params):
        sampler = self.samplers[role]

        def fn(ctx, mask, seed):
            out = sampler(params, self.rest, ctx, mask, jax.random.key(seed))
            return np.asarray(out.tokens), np.asarray(out.logp)

        return fn


def warm_start(config, agents: Agents):
    """SFT of both agents; returns params {role: tree}."""
    c, sc = config, config.sft
    data = {
        "conversation": conversation_data(sc.num_train, c.seed),
        "feedback": feedback_data(sc.num_train, c.seed),
    }
    params = {}
    if agents.sft_update is None:
        agents.sft_update = make_sft_update(agents.graphdef, c.sft_optim)
    for i, role in enumerate(ROLES):
        p = jax.tree.map(lambda x: x.copy(), agents.init_params[role])
        params[role], _ = sft_agent(
            p, agents.rest, data[role], sft_update=agents.sft_update, steps=sc.steps,
            batch_size=sc.batch_size, seed=c.seed * 7 + i,
        )  # fmt: skip
    return params


def new_state(config, params, agents: Agents):
    role_optims = {r: config.rl_optim[r] for r in ROLES}
    copy = {r: jax.tree.map(lambda x: x.copy(), params[r]) for r in ROLES}
    return create_state(copy, agents.rest, role_optims, jax.random.key(config.seed))


def _protocol(agents, params, prompts, types, seed, feedback):
    conv = agents.agent_fn("conversation", params["conversation"])
    fb = agents.agent_fn("feedback", params["feedback"])
    return run_protocol(conv, fb, prompts, types, seed, feedback=feedback)


def stage_coefs(rc, stage: int) -> tuple[float, float, float]:
    """(alpha, lambda, gamma) of a stage: stage 2 drops the additive label term (lambda = 0)."""
    return (rc.alpha, rc.lam if stage == 1 else 0.0, rc.gamma)


def train_stage(
    config, agents, state, *, stage: int, writer=None, prefix_step=0, start=0, on_step=None
):
    """RL steps `start..` of one stage; returns (state, per-step history of rollout metrics).

    The prompt draws and sampling seeds are a pure function of (seed, stage, step), so a stage
    resumed at `start` continues exactly as an uninterrupted one. `on_step(done, state)` is
    called after every step (checkpointing).
    """
    c, rc = config, config.rl
    steps = rc.stage1_steps if stage == 1 else rc.stage2_steps
    alpha, lam, gamma = stage_coefs(rc, stage)
    train_conv = stage == 2 and not c.frozen_conversation
    train_fb = not c.single
    feedback = "none" if c.single else "agent"
    prompts, types = make_prompts(rc.num_train_prompts, c.seed, "train")
    rng = np.random.default_rng([c.seed, stage, 0x5A])
    history = []
    for step in range(steps):
        idx = rng.choice(len(prompts), rc.batch_size, replace=False)
        if step < start:
            continue  # fast-forward the prompt stream of a resumed stage
        seed = (c.seed * 1000 + stage) * 100000 + step
        traj, rec = _protocol(agents, state.params, prompts[idx], types[idx], seed, feedback)
        rew = rewards(traj, alpha=alpha, lam=lam, gamma=gamma, gate=c.gate, judge_fn=agents.judge)
        batches, _ = assemble(rec, traj, rew, seed, conv_mix="a" if c.single else rc.conv_mix)
        if not train_fb:
            batches.pop("feedback")
        m = {}
        for _ in range(rc.inner_updates):
            state, m = waltz_update(state, agents.update, batches, train_conversation=train_conv)
        row = {f"rollout/{k}": v for k, v in metrics(traj, rew, agents.judge).items()}
        row.update({f"train/{k}": float(v) for k, v in m.items()})
        row["rollout/r_f"] = float(rew["r_f"].mean())
        history.append(row)
        if writer is not None and ((step + 1) % c.log_every == 0 or step + 1 == steps):
            writer.write(prefix_step + step + 1, row)
        if on_step is not None:
            on_step(step + 1, state)
    return state, history


def evaluate(config, agents, params, *, feedback="agent", guard=False):
    """Held-out metrics of the protocol's final answers (sampled at the RL temperature)."""
    c, b = config, config.rl.batch_size
    prompts, types = make_prompts(c.rl.num_eval, c.seed + 999, "test")
    parts = []
    for start in range(0, len(prompts), b):
        p, t = prompts[start : start + b], types[start : start + b]
        n = len(p)
        if n < b:  # pad the last chunk to the static batch, then drop the padding rows
            p, t = np.concatenate([p, p[: b - n]]), np.concatenate([t, t[: b - n]])
        traj, _ = _protocol(agents, params, p, t, 7919 + start, feedback)
        parts.append({k: v[:n] for k, v in traj.__dict__.items()})
    traj = Trajectories(**{k: np.concatenate([q[k] for q in parts]) for k in parts[0]})
    if guard:
        traj = safeguard(traj, [REFUSE, EOS, PAD][:ANSWER_NEW])
    return metrics(traj, judge_fn=agents.judge), traj


def _save(ckpt, state, extra):
    """Checkpoint numbered by progress (RL steps done, evaluations done), so it only grows; the
    extra dict is copied because the save is asynchronous and the caller keeps mutating it."""
    step = sum(extra["done"].values()) + 10_000 * len(extra["result"])
    ckpt.save(step, state, copy.deepcopy(extra), force=True)


def run(config, workdir: str) -> dict:
    """The default pipeline (warm start -> baselines -> stage 1 -> stage 2), result.json."""
    from train.checkpoint import Checkpointer
    from train.loop import restore_or
    from train.metrics import MetricWriter
    from train.plot import plot_metrics

    t0 = time.time()
    writer = MetricWriter(workdir, tensorboard=False, console=not config.tiny)
    agents = Agents(config)
    ckpt = Checkpointer(os.path.join(workdir, "ckpt"), keep=config.keep_checkpoints)
    template = new_state(config, agents.init_params, agents)
    state, extra, resumed = restore_or(ckpt, template)
    if resumed:  # the warm start is the reference tree kept in the state
        params = state.frozen["ref"]
    else:
        params = warm_start(config, agents)
        state = new_state(config, params, agents)
        extra = {"result": {}, "done": {}}
    result, done = extra["result"], extra["done"]

    def eval_once(name, **kw):
        if name not in result:
            result[name] = evaluate(config, agents, kw.pop("params", params), **kw)[0]
            _save(ckpt, state, extra)

    eval_once("untrained_pair")
    eval_once("safeguard", guard=True)
    eval_once("oracle_template", feedback="oracle")
    stages = [1, 2] if config.stage == "both" else [int(config.stage)]
    for stage in [s for s in stages if not (s == 1 and config.single)]:
        steps = config.rl.stage1_steps if stage == 1 else config.rl.stage2_steps
        off = config.rl.stage1_steps if stage == 2 else 0
        key = f"stage{stage}"

        def save(k, st, key=key, steps=steps):
            done[key] = k
            if k == steps or (config.ckpt_every and k % config.ckpt_every == 0):
                _save(ckpt, st, extra)

        name = "stage1" if stage == 1 else "final"
        if done.get(key, 0) < steps:  # (re)train, so any stored evaluation of it is stale
            result.pop(name, None)
        state, _ = train_stage(
            config, agents, state, stage=stage, writer=writer, prefix_step=off,
            start=done.get(key, 0), on_step=save,
        )  # fmt: skip
        fb = "none" if config.single else "agent"
        eval_once(name, params=state.params, feedback=fb)
        if stage == 1:
            result["stage1_conversation_bitwise_unchanged"] = trees_equal(
                state.frozen["ref"]["conversation"], state.params["conversation"]
            )
    ckpt.wait()
    result = dict(result)
    result["update_traces"] = agents.update.traces
    result["seconds"] = time.time() - t0
    writer.close()
    with open(os.path.join(workdir, "result.json"), "w") as f:
        json.dump(result, f, indent=1, default=float)
    keys = ["rollout/asr", "rollout/orr", "rollout/ftr_nonharmful", "rollout/label_acc"]
    keys += ["rollout/json_valid", "rollout/dir_pos"]
    plot_metrics(writer.jsonl_path, keys, os.path.join(workdir, "plot.png"), "WaltzRL")
    if not config.tiny:
        print(format_systems(result))
    return result


COLUMNS = ("asr", "orr", "ftr", "ftr_nonharmful", "label_acc", "label_f1", "json_valid")
COLUMNS += ("dir_pos", "dir_zero", "dir_neg")


def format_systems(result: dict) -> str:
    """One line per evaluated system of a run."""
    out = [f"{'system':18s} " + " ".join(f"{k[:9]:>9s}" for k in COLUMNS)]
    for name, m in result.items():
        if isinstance(m, dict):
            out.append(f"{name:18s} " + " ".join(f"{m.get(k, float('nan')):9.3f}" for k in COLUMNS))
    return "\n".join(out)
