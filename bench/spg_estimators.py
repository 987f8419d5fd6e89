"""Why the SPG table comes out flat: gradient signal and noise of each method's estimator.

On real rollout batches from the warm start of `bench/spg_table.py` (task, seed 0; the config's
16 prompts x 6 completions), the update direction of every table method is computed with K
independent mask keys (the only randomness inside an update). Per method:

- `snr`: ||g_bar||^2 / mean_k ||g_k - g_bar||^2, the signal-to-noise ratio of ONE update's
  gradient (g_bar = mean over the K keys, the estimator's expected gradient on this batch);
- `cos_elbo`: cosine between g_bar and SPG-ELBO's g_bar (do the methods agree on a direction?);
- `shuffled`: ||g_bar_shuffled|| / ||g_bar||, where g_bar_shuffled uses the same completions with
  their advantages permuted within each group (no reward information; a control). Near 1 means
  most of the expected update does not depend on which completion was rewarded;
- `drift`: ||mean_b g_bar_shuffled_b|| / ||mean_b g_bar_b|| over B rollout batches: how much of
  the update accumulated over B steps would remain with no reward information at all;
- `drift_cos` / `signal_cos`: mean pairwise cosine across batches of the shuffled / real g_bar.
  A reward-independent estimator bias points the same way on every batch (drift_cos > 0) and
  accumulates; pure noise averages out (drift_cos ~ 0);
- `grad_norm`: mean ||g_k||.

Writes `bench/results/spg_estimators.{json,md}`.

  python -m bench.spg_estimators [--tasks=sudoku4,countdown] [--keys=12] [--batches=6]
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bench.common import RESULTS, device_info, md_table, write_results
from bench.spg_table import METHODS


def _setup(config, sft_dir):
    """The warm start (reloaded from the table's cache, or trained) and its rollout function."""
    from rl.run_spg import make_train_rollout
    from train.metrics import MetricWriter
    from train.sft import make_task_and_tokenizer, sft_stage
    from train.state import split_module

    task, tok = make_task_and_tokenizer(config)
    writer = MetricWriter(os.path.join(sft_dir, "diag_metrics"))
    sft = sft_stage(config, sft_dir, task=task, tokenizer=tok, writer=writer, objective="mdlm")
    writer.close()
    graphdef, params, rest = split_module(sft.model)
    return graphdef, params, rest, tok, make_train_rollout(config, graphdef, task, tok)


def _cos(a, b) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _shuffle_within_groups(adv: np.ndarray, g: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    groups = np.asarray(adv).reshape(-1, g).copy()
    for row in groups:
        rng.shuffle(row)
    return groups.reshape(-1)


def diagnose(task: str, keys: int, batches: int) -> list[dict]:
    from configs import spg as spg_config
    from rl.run_spg import build_objective

    base = spg_config.get_config(f"task={task},seed=0")
    sft_dir = os.path.join(RESULTS, "spg_runs", task, "sft_seed0")
    graphdef, params, rest, tok, rollout = _setup(base, sft_dir)
    g = base.rl.group_size
    data, rmet = [], None
    for b in range(batches):  # rollout batches of RL steps 0..batches-1, all from the warm start
        batch, met = rollout(params, rest, b)
        rmet = rmet or met
        batch = {k: jnp.asarray(v) for k, v in batch.items()}
        shuf = _shuffle_within_groups(batch["advantage"], g, b)
        data.append((batch, dict(batch, advantage=jnp.asarray(shuf))))
    mask_keys = jax.random.split(jax.random.key(123), keys)
    frozen = {"policy": rest, "ref": params, "old": params}

    means, rows = {}, []
    for method, arg in METHODS.items():
        cfg = spg_config.get_config(f"task={task},seed=0,{arg}")
        loss_fn = build_objective(cfg, graphdef, tok).loss_fn

        def mean_loss(p, b, k, loss_fn=loss_fn):
            s, d, _ = loss_fn({"policy": p}, frozen, b, k)
            return s / jnp.maximum(d, 1.0)

        grad = jax.jit(jax.vmap(jax.grad(mean_loss), in_axes=(None, None, 0)))

        def flat_grads(b, grad=grad):
            return np.stack([ravel_pytree(x)[0] for x in _unstack(grad(params, b, mask_keys))])

        real, shuf = [], []
        for i, (batch, shuffled) in enumerate(data):
            flat = flat_grads(batch)
            real.append(flat.mean(0))
            shuf.append(flat_grads(shuffled).mean(0))
            if i == 0:
                gbar = real[0]
                noise = np.mean(np.sum((flat - gbar) ** 2, axis=1))
                row = {
                    "task": task,
                    "method": method,
                    # Float-rounding noise only (d1/wd1 with p_mask_prompt 0 draw no masks): inf.
                    "snr": float(np.sum(gbar**2) / noise)
                    if noise > 1e-9 * np.sum(gbar**2)
                    else float("inf"),
                    "shuffled": float(np.linalg.norm(shuf[0]) / np.linalg.norm(gbar)),
                    "grad_norm": float(np.linalg.norm(flat, axis=1).mean()),
                }
        means[method] = real[0]
        pairs = [(i, j) for i in range(len(shuf)) for j in range(i + 1, len(shuf))]
        row["drift"] = float(np.linalg.norm(np.mean(shuf, 0)) / np.linalg.norm(np.mean(real, 0)))
        row["drift_cos"] = float(np.mean([_cos(shuf[i], shuf[j]) for i, j in pairs]))
        row["signal_cos"] = float(np.mean([_cos(real[i], real[j]) for i, j in pairs]))
        rows.append(row)
    ref = means["SPG-ELBO"]
    for r in rows:
        r["cos_elbo"] = _cos(means[r["method"]], ref)
        r["batch_reward"] = rmet["rl/reward_mean"]
        r["batch_pos_frac"] = rmet["rl/pos_frac"]
    return rows


def _unstack(tree):
    n = jax.tree.leaves(tree)[0].shape[0]
    return [jax.tree.map(lambda x, i=i: np.asarray(x[i]), tree) for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="sudoku4,countdown")
    ap.add_argument("--keys", type=int, default=12)
    ap.add_argument("--batches", type=int, default=6)
    args = ap.parse_args()
    rows = []
    for task in args.tasks.split(","):
        rows += diagnose(task, args.keys, args.batches)
    write(rows, args.keys, args.batches)


COLS = ("snr", "cos_elbo", "shuffled", "drift", "drift_cos", "signal_cos", "grad_norm")


def write(rows: list[dict], keys: int, batches: int) -> None:
    for r in rows:
        for k in COLS + ("batch_reward", "batch_pos_frac"):
            r[k] = round(r[k], 4)
    cols = ["task", "method", *COLS, "batch_reward"]
    table = md_table(rows, cols)
    print(table)
    md = (
        "# SPG estimators: gradient signal, noise and reward-independent drift\n\n"
        f"{device_info()}\n\nWarm start of seed 0; rollout batches of RL steps 0..{batches - 1}"
        f" (16 prompts x 6 each; one-batch columns use batch 0); {keys} mask keys per method."
        " See the module docstring of `bench/spg_estimators.py`"
        " for the columns. snr = inf: the estimator draws no random masks (d1 and wd1 mask the"
        " whole completion, and `p_mask_prompt` is 0 in this config), so its gradient on a batch"
        " is deterministic.\n\n" + table + "\n"
    )
    write_results("spg_estimators", {"device": device_info(), "rows": rows}, md)


if __name__ == "__main__":
    main()
