"""Runner for `configs/pcl.py`: SFT warm start, then GRPO under one of five prompt curricula.

PCL (arXiv:2510.01135): with `rl.curriculum=pcl` the state holds two roles, `policy` and `value`
(V_φ: the policy's architecture over prompt tokens with a scalar head, `rl.curriculum`), each with
its own optimizer; one jitted step applies GRPO to the policy and the MSE on the rolled-out
prompts' group pass rates to the value model. The baselines (`uniform`, `prefilter`, `ds`,
`speed`, see `rl.pcl_harness`) train the policy alone on batches of the same shape, so every
curriculum trains on the same number of samples per step.

Reported: held-out greedy accuracy before/after (paired bootstrap over prompts,
`rl.evaluation`), accuracy per difficulty level, accuracy against steps and against wall-clock
(collection + update seconds, evaluation excluded, pre-filtering's one-time screen included), the
effective ratio, the value model's MSE, selection cost, generated samples per accepted prompt.
The selected prompts' pass rates (n-sample group estimates) and difficulties are appended per
step to `selected.jsonl`; `plot.png` shows the curves and their histogram.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from rl import curriculum, objectives
from rl.evaluation import paired_bootstrap
from rl.pcl_harness import Harness
from train.checkpoint import Checkpointer
from train.loop import fit
from train.optim import make_role_optimizer
from train.runtime import Runtime
from train.sft import make_task_and_tokenizer, sft_stage
from train.state import TrainState, split_module

# The `rl` fields this runner reads; GRPO's own fields are declared by the objective.
RUNNER_FIELDS = (
    "curriculum",
    "tau",
    "k",
    "sft_dir",
    "seed",
    "steps",
    "prompts_per_step",
    "group_size",
    "value_hidden",
    "value_coef",
    "prefilter_samples",
    "ds_max_rounds",
    "speed_samples",
    "num_train_prompts",
    "num_eval",
    "eval_batch_size",
    "eval_every",
    "max_prompt_len",
    "max_new_tokens",
    "temperature",
    "advantage",
)


def build(config, graphdef, params, rest, runtime: Runtime | None = None):
    """(state, update, loss_fn) for the curriculum: `policy` (+ `value` for PCL) roles.

    The state is created sharded and the update step jitted by `runtime` (default: a new
    `Runtime` from `config.mesh_shape`).
    """
    rc = config.rl
    rt = runtime or Runtime(config)
    seed = config.seed if rc.seed < 0 else rc.seed
    roles = {"policy": params}
    opts = {"policy": dict(config.rl_optim, total_steps=rc.steps)}
    policy_loss = objectives.build(rc, graphdef, name="grpo", runner_fields=RUNNER_FIELDS).loss_fn
    loss_fn = policy_loss
    if rc.curriculum == "pcl":
        d = config.model.d_model
        roles["value"] = curriculum.init_value_params(params, d, rc.value_hidden, seed + 3)
        opts["value"] = dict(config.value_optim, total_steps=rc.steps)
        loss_fn = curriculum.make_pcl_loss(policy_loss, graphdef, value_coef=rc.value_coef)
    tx = make_role_optimizer(opts)

    def init(roles, rest):
        return TrainState.create(roles, tx, jax.random.key(seed + 5), {"policy": rest})

    state = rt.create_state(init, roles, rest)
    return state, rt.update_step(loss_fn, tx), loss_fn


def wallclock(hist: list[dict], setup_s: float) -> np.ndarray:
    """Cumulative seconds after each step [T], compilation excluded: the first step (which
    compiles the sampler and the update) is charged at the median of the others."""
    t = np.array([h["time/step_s"] for h in hist], np.float64)
    if t.size > 1:
        t[0] = np.median(t[1:])
    return setup_s + np.cumsum(t)


def summarise(hist: list[dict], curve: list[tuple]) -> dict[str, float]:
    """Run-level costs and trends from the per-step statistics."""

    def col(k):
        return np.array([h[k] for h in hist if k in h], np.float64)

    acc, gen = col("cost/accepted"), col("cost/gen_samples")
    q = max(len(hist) // 4, 1)
    out = {
        "effective_ratio": float(col("rl/effective_ratio").mean()),
        "gen_per_accepted": float(gen.sum() / max(acc.sum(), 1)),
        "select_s_per_step": float(col("cost/select_s").mean()),
        "collect_s_per_step": float(col("cost/collect_s").mean()),
        "collect_s_per_accepted": float(col("cost/collect_s").sum() / max(acc.sum(), 1)),
        "select_s_per_accepted": float(col("cost/select_s").sum() / max(acc.sum(), 1)),
        "difficulty_first_q": float(col("sel/difficulty_mean")[:q].mean()),
        "difficulty_last_q": float(col("sel/difficulty_mean")[-q:].mean()),
        "wallclock_s": float(curve[-1][1]),
    }
    mse = col("pcl/value_mse")
    if mse.size:
        out["value_mse_first_q"] = float(mse[:q].mean())
        out["value_mse_last_q"] = float(mse[-q:].mean())
    if "ds/failed" in hist[0]:
        out["ds_refill_failures"] = float(col("ds/failed").sum())
    return out


def plot(curve, records, hist, path: str, title: str) -> str:
    """Accuracy vs step and wall-clock, effective ratio, value MSE, difficulty, pass-rate hist."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(12.6, 6.0))
    steps, secs, accs = zip(*curve)
    ax[0, 0].plot(steps, accs, marker=".")
    ax[0, 0].set_title("held-out accuracy vs step", fontsize=9)
    ax[0, 1].plot(secs, accs, marker=".")
    ax[0, 1].set_title("held-out accuracy vs wall-clock (s)", fontsize=9)
    for a, k in ((ax[0, 2], "rl/effective_ratio"), (ax[1, 0], "pcl/value_mse")):
        ys = [h[k] for h in hist if k in h]
        a.plot(range(1, len(ys) + 1), ys)
        a.set_title(k, fontsize=9)
    ax[1, 1].plot([h["sel/difficulty_mean"] for h in hist])
    ax[1, 1].set_title("mean difficulty of selected prompts", fontsize=9)
    third = max(len(records) // 3, 1)
    for part, lab in ((records[:third], "first third"), (records[-third:], "last third")):
        rates = [p for r in part for p in r["pass_rate"]]
        ax[1, 2].hist(rates, bins=np.linspace(0, 1, 11), alpha=0.5, label=lab)
    ax[1, 2].set_title("selected prompts' pass rates", fontsize=9)
    ax[1, 2].legend(fontsize=8)
    for a in ax.flat:
        a.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(config, workdir: str) -> dict[str, float]:
    """Runner for configs/pcl.py; returns the final metrics."""
    rc = config.rl
    task, tokenizer = make_task_and_tokenizer(config)
    rt = Runtime(config)
    writer = rt.writer(workdir)
    sft_dir = rc.sft_dir or os.path.join(workdir, "sft")
    sft = sft_stage(
        config, sft_dir, task=task, tokenizer=tokenizer, writer=writer, objective="ar", runtime=rt
    )
    graphdef, params, rest = split_module(sft.model)
    state, update, _ = build(config, graphdef, params, rest, rt)
    harness = Harness(config, graphdef, task, tokenizer)
    before = harness.evaluate(state)
    setup = harness.prefilter(state) if rc.curriculum == "prefilter" else {}
    writer.write(sft.steps, {"before/accuracy": before.mean(), **setup})
    ckpt = Checkpointer(os.path.join(workdir, "ckpt"), keep=config.keep_checkpoints)
    state, extra, resumed = rt.restore(ckpt, state)
    held = {"elapsed": harness.setup_s, "acc": before}
    curve = [(0, harness.setup_s, float(before.mean()))]
    hist, records, done_steps = [], [], []
    sel_path = os.path.join(workdir, "selected.jsonl")

    def collect(st, step):
        held["t0"] = time.perf_counter()
        batch, held["stats"], rec = harness.collect(st, step)
        held["step"] = step
        records.append({"step": step, **rec})
        with open(sel_path, "a") as f:
            f.write(json.dumps(records[-1]) + "\n")
        return rt.put(batch), {}

    def update_fn(st, batch):
        # Wall-clock of the step (collection + update) needs the update finished.
        st, m = update(st, batch)
        jax.block_until_ready(st.step)
        dt = time.perf_counter() - held["t0"]
        held["elapsed"] += dt
        stats = {**held["stats"], "time/step_s": dt, "time/elapsed_s": held["elapsed"]}
        hist.append(stats)
        done_steps.append(held["step"] + 1)
        return st, {**m, **stats}

    def eval_fn(st):
        held["acc"] = harness.evaluate(st)
        curve.append((int(jax.device_get(st.step)), held["elapsed"], float(held["acc"].mean())))
        return {"eval/accuracy": held["acc"].mean(), "time/elapsed_s": held["elapsed"]}

    state, last = fit(
        state,
        collect,
        1,
        update_fn=update_fn,
        num_steps=rc.steps,
        writer=writer,
        ckpt=ckpt,
        resume=extra if resumed else None,
        ckpt_every=config.ckpt_every,
        log_every=config.log_every,
        eval_fn=eval_fn,
        eval_every=rc.eval_every,
        extra={"stage": "rl"},
        desc=f"pcl:{rc.curriculum}",
        prefix_step=sft.steps,
    )
    ckpt.close()
    after = held["acc"]
    writer.close()
    iv = paired_bootstrap(before, after)
    levels = sorted(set(harness.test_diff.tolist()))
    by_level = {
        f"level{d}": (
            float(before[harness.test_diff == d].mean()),
            float(after[harness.test_diff == d].mean()),
        )
        for d in levels
    }
    if hist:  # wall-clock without compilation (see `wallclock`) for the accuracy curve
        clock = dict(zip(done_steps, wallclock(hist, harness.setup_s), strict=True))
        curve = [(s, clock.get(s, t), a) for s, t, a in curve]
    summ = summarise(hist, curve) if hist else {}
    png = (
        plot(curve, records, hist, os.path.join(workdir, "plot.png"), f"pcl ({config.variant})")
        if hist
        else ""
    )
    with open(os.path.join(workdir, "curve.json"), "w") as f:
        json.dump({"curve": curve, "before": before.tolist(), "after": after.tolist()}, f)
    result = {
        "before/accuracy": float(before.mean()),
        "after/accuracy": float(after.mean()),
        "change": iv.mean,
        "change_lo": iv.lo,
        "change_hi": iv.hi,
        "skipped": int(jax.device_get(state.skipped)),
        **summ,
    }
    for k, (b, a) in by_level.items():
        result[f"before/{k}"], result[f"after/{k}"] = b, a
    print("\n" + "=" * 72)
    print(
        f"pcl on {config.task}: curriculum={rc.curriculum} tau={rc.tau} k={rc.k}, "
        f"SFT {sft.steps} steps, RL {rc.steps} steps of {rc.prompts_per_step}x{rc.group_size}"
    )
    print(
        f"  held-out accuracy  before {before.mean():.4f}  after {after.mean():.4f}  "
        f"change {iv} (95% paired bootstrap, n={iv.n})"
    )
    for k, (b, a) in by_level.items():
        print(f"    difficulty {k[5:]}: {b:.3f} -> {a:.3f}")
    for k in (
        "effective_ratio",
        "value_mse_first_q",
        "value_mse_last_q",
        "select_s_per_step",
        "gen_per_accepted",
        "collect_s_per_accepted",
        "difficulty_first_q",
        "difficulty_last_q",
        "wallclock_s",
    ):
        if k in summ:
            print(f"  {k:24s} {summ[k]:.4f}")
    print(f"  selected prompts {sel_path}   plot {png}")
    print("=" * 72)
    return result
