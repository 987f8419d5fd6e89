"""Why the SPG table comes out flat: gradient signal and noise of each method's estimator.

On one real rollout batch from the warm start of `bench/spg_table.py` (task, seed 0; the config's
16 prompts x 6 completions), the update direction of every table method is computed with K
independent mask keys (the only randomness inside an update). Per method:

- `snr`: ||g_bar||^2 / mean_k ||g_k - g_bar||^2, the signal-to-noise ratio of ONE update's
  gradient (g_bar = mean over the K keys, the estimator's expected gradient on this batch);
- `cos_elbo`: cosine between g_bar and SPG-ELBO's g_bar (do the methods agree on a direction?);
- `shuffled`: ||g_bar_shuffled|| / ||g_bar||, where g_bar_shuffled uses the same completions with
  their advantages permuted within each group (no reward information; a control). Near 1 means
  most of the expected update does not depend on which completion was rewarded;
- `grad_norm`: mean ||g_k||.

Writes `bench/results/spg_estimators.{json,md}`.

  python -m bench.spg_estimators [--tasks=sudoku4,countdown] [--keys=32]
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


def _rollout_batch(config, sft_dir):
    """The warm start (reloaded from the table's cache, or trained) and rollout batch 0."""
    from rl.run_spg import make_train_rollout
    from train.metrics import MetricWriter
    from train.sft import make_task_and_tokenizer, sft_stage
    from train.state import split_module

    task, tok = make_task_and_tokenizer(config)
    writer = MetricWriter(os.path.join(sft_dir, "diag_metrics"))
    sft = sft_stage(config, sft_dir, task=task, tokenizer=tok, writer=writer, objective="mdlm")
    writer.close()
    graphdef, params, rest = split_module(sft.model)
    batch, metrics = make_train_rollout(config, graphdef, task, tok)(params, rest, 0)
    return graphdef, params, rest, tok, {k: jnp.asarray(v) for k, v in batch.items()}, metrics


def _shuffle_within_groups(adv: np.ndarray, g: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    groups = np.asarray(adv).reshape(-1, g).copy()
    for row in groups:
        rng.shuffle(row)
    return groups.reshape(-1)


def diagnose(task: str, keys: int) -> list[dict]:
    from configs import spg as spg_config
    from rl.run_spg import build_objective

    base = spg_config.get_config(f"task={task},seed=0")
    sft_dir = os.path.join(RESULTS, "spg_runs", task, "sft_seed0")
    graphdef, params, rest, tok, batch, rmet = _rollout_batch(base, sft_dir)
    g = base.rl.group_size
    shuffled = dict(batch, advantage=jnp.asarray(_shuffle_within_groups(batch["advantage"], g, 0)))
    mask_keys = jax.random.split(jax.random.key(123), keys)
    frozen = {"policy": rest, "ref_params": params, "old_params": params}

    means, rows = {}, []
    for method, arg in METHODS.items():
        cfg = spg_config.get_config(f"task={task},seed=0,{arg}")
        loss_fn = build_objective(cfg, graphdef, tok)

        def mean_loss(p, b, k, loss_fn=loss_fn):
            s, d, _ = loss_fn({"policy": p}, frozen, b, k)
            return s / jnp.maximum(d, 1.0)

        grad = jax.jit(jax.vmap(jax.grad(mean_loss), in_axes=(None, None, 0)))
        flat = np.stack([ravel_pytree(x)[0] for x in _unstack(grad(params, batch, mask_keys))])
        flat_s = np.stack([ravel_pytree(x)[0] for x in _unstack(grad(params, shuffled, mask_keys))])
        gbar = flat.mean(0)
        noise = np.mean(np.sum((flat - gbar) ** 2, axis=1))
        means[method] = gbar
        rows.append(
            {
                "task": task,
                "method": method,
                # Float-rounding noise only (d1/wd1 with p_mask_prompt 0 draw no masks): inf.
                "snr": float(np.sum(gbar**2) / noise)
                if noise > 1e-9 * np.sum(gbar**2)
                else float("inf"),
                "shuffled": float(np.linalg.norm(flat_s.mean(0)) / np.linalg.norm(gbar)),
                "grad_norm": float(np.linalg.norm(flat, axis=1).mean()),
            }
        )
    ref = means["SPG-ELBO"]
    for r in rows:
        v = means[r["method"]]
        r["cos_elbo"] = float(v @ ref / (np.linalg.norm(v) * np.linalg.norm(ref)))
        r["batch_reward"] = rmet["rl/reward_mean"]
        r["batch_pos_frac"] = rmet["rl/pos_frac"]
    return rows


def _unstack(tree):
    n = jax.tree.leaves(tree)[0].shape[0]
    return [jax.tree.map(lambda x, i=i: np.asarray(x[i]), tree) for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="sudoku4,countdown")
    ap.add_argument("--keys", type=int, default=32)
    args = ap.parse_args()
    rows = []
    for task in args.tasks.split(","):
        rows += diagnose(task, args.keys)
    write(rows, args.keys)


def write(rows: list[dict], keys: int) -> None:
    for r in rows:
        for k in ("snr", "shuffled", "grad_norm", "cos_elbo", "batch_reward", "batch_pos_frac"):
            r[k] = round(r[k], 4)
    cols = ["task", "method", "snr", "cos_elbo", "shuffled", "grad_norm", "batch_reward"]
    table = md_table(rows, cols)
    print(table)
    md = (
        "# SPG estimators: gradient signal and noise on one rollout batch\n\n"
        f"{device_info()}\n\nWarm start of seed 0, rollout batch 0 (16 prompts x 6), "
        f"{keys} mask keys per method. See the module docstring of `bench/spg_estimators.py`"
        " for the columns. snr = inf: the estimator draws no random masks (d1 and wd1 mask the"
        " whole completion, and `p_mask_prompt` is 0 in this config), so its gradient on a batch"
        " is deterministic.\n\n" + table + "\n"
    )
    write_results("spg_estimators", {"device": device_info(), "rows": rows}, md)


if __name__ == "__main__":
    main()
