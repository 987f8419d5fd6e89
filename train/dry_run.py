"""`--dry_run`: the parameter count, per-device sharding plan and compiled memory of a config.

Every config has a plan. Language-model experiments (sft, spg, grpo, jepo, pcl, waltz) use the
policy LM plan below; the other runners hand `plan` their own `DryRunParts` (the state
initialiser, loss, optimizer and one batch of their main update step; see each runner's
`dry_run_parts` and `launch.experiments.DRY_RUN`).

Nothing is initialised: shapes come from `jax.eval_shape` and the update step is lowered and
compiled against abstract, sharded arguments, so `configs/spg.py:llada8b` is checked without its
weights. The memory figures are XLA's `memory_analysis()` of the compiled step for one device of
the mesh, on the backend this runs on (run it on the target hardware, or with fake CPU devices for
a CPU estimate of the sharding).

What is compiled: the policy Transformer's supervised LM update (`ar` if causal, else `mdlm`)
with the config's optimizer and microbatches, at the batch shape of one update: `sft.batch_size` x
`sft.max_len`, or for RL configs `rl.prompts_per_step * rl.group_size` rows of
`rl.max_prompt_len + rl.gen_len` (or `max_new_tokens`) tokens with `rl_optim` (WaltzRL:
`rl.batch_size` rows of `model.max_len`). RL objectives' extra forward passes (Monte Carlo masks,
a reference policy) and second roles (PCL's value model, WaltzRL's feedback agent) are not
included; the policy state (parameters + optimizer) is exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from train.optim import make_optimizer
from train.runtime import Runtime

_LM_EXPERIMENTS = ("sft", "spg", "grpo", "jepo", "pcl", "waltz", "llamarl")


@dataclasses.dataclass
class DryRunParts:
    """What `plan` compiles for a runner: `init() -> TrainState`, its loss and optimizer, one
    host batch of the update's shape, and a line saying which update that is."""

    init: Callable
    loss_fn: Callable
    tx: object
    batch: dict
    microbatches: int = 1
    what: str = ""


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


def _update_shape(config) -> tuple[int, int, dict, int]:
    """(rows, length, optimizer config, microbatches) of one update for this config."""
    if "rl" in config and config.get("rl") is not None and "prompts_per_step" not in config.rl:
        rc = config.rl  # WaltzRL: a batch of conversations of the model's length
        optim = dict(config.get("rl_optim", config.get("optim")))
        optim = dict(optim.get("conversation", optim))  # per-agent optimizers: the policy's
        return int(rc.batch_size), int(config.model.max_len), optim, 1
    if "rl" in config and config.get("rl") is not None:
        rc = config.rl
        rows = int(rc.prompts_per_step) * int(rc.group_size)
        new = rc.get("gen_len", rc.get("max_new_tokens", 0))  # diffusion | autoregressive
        length = int(rc.max_prompt_len) + int(new)
        optim = dict(config.get("rl_optim", config.optim))
        return rows, length, optim, int(rc.get("microbatches", 1))
    sc = config.sft
    return int(sc.batch_size), int(sc.max_len), dict(config.optim), int(sc.get("microbatches", 1))


def _vocab_size(config) -> int:
    if config.model.get("vocab_size", 0):
        return int(config.model.vocab_size)
    from data.tokenizer import CharTokenizer

    return CharTokenizer().vocab_size


def lm_parts(config) -> DryRunParts:
    """The policy LM's supervised update for a language-model experiment (module docstring)."""
    from train.sft import make_lm_init, make_lm_loss

    if config.experiment not in _LM_EXPERIMENTS:
        raise ValueError(
            f"{config.experiment!r} has no policy LM; its runner gives its own DryRunParts"
        )
    rows, length, optim, micro = _update_shape(config)
    tx = make_optimizer(optim)
    vocab = _vocab_size(config)
    causal = bool(config.model.get("causal", True))
    max_len = max(int(config.model.max_len), length)
    graphdef, init = make_lm_init(config, vocab, tx, causal=causal, max_len=max_len, seed=0)

    class _Ids:  # only the ids the mdlm loss needs
        mask_id, eos_id = 3, 2

    loss_fn = make_lm_loss("ar" if causal else "mdlm", graphdef, _Ids)
    batch = {
        "tokens": np.zeros((rows, length), np.int32),
        "mask": np.zeros((rows, length), bool),
        "loss_mask": np.zeros((rows, length), bool),
        "prompt_mask": np.zeros((rows, length), bool),
    }
    what = f"{'ar' if causal else 'mdlm'} update of the policy LM, vocab {vocab}"
    return DryRunParts(init, loss_fn, tx, batch, micro, what)


def plan(config, parts: DryRunParts | None = None) -> dict:
    """Computes the dry-run report for `config` (see the module docstring).

    Args:
      parts: the runner's update to plan (default: `lm_parts(config)`).

    Returns:
      dict with `params`, `mesh`, `devices`, `leaves` (path, shape, spec, per-device shape),
      `state_bytes_per_device` and the compiled step's `memory` (bytes per device).
    """
    parts = parts if parts is not None else lm_parts(config)
    rt = Runtime(config)
    shapes, shardings = rt.abstract_state(parts.init)
    rt.state_sharding = shardings
    abstract = jax.jit(parts.init, out_shardings=shardings).eval_shape()
    update = rt.update_step(parts.loss_fn, parts.tx, microbatches=parts.microbatches)
    host = parts.batch
    from models.sharding import batch_shardings

    batch = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=s),
        host,
        batch_shardings(host, rt.mesh),
    )
    with jax.set_mesh(rt.mesh):
        compiled = update.jitted.lower(abstract, batch).compile()
    mem = compiled.memory_analysis()
    memory = {
        k: int(getattr(mem, f"{k}_size_in_bytes", 0) or 0)
        for k in ("argument", "output", "temp", "alias", "generated_code")
    }
    leaves, state_bytes = [], 0
    flat = jax.tree_util.tree_flatten_with_path(abstract)[0]
    for path, leaf in flat:
        shard = leaf.sharding.shard_shape(leaf.shape) if leaf.shape else ()
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            nbytes = 8  # a threefry key: two uint32
        else:
            nbytes = int(np.prod(shard, dtype=np.int64)) * jnp.dtype(leaf.dtype).itemsize
        state_bytes += nbytes
        name = jax.tree_util.keystr(path).removesuffix(".value")
        leaves.append((name, leaf.shape, leaf.sharding.spec, shard))
    n_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes.params)))
    first = np.shape(jax.tree.leaves(host)[0])
    return {
        "params": n_params,
        "what": parts.what,
        "mesh": dict(rt.mesh.shape),
        "devices": rt.num_devices,
        "batch": (first[0], first[1] if len(first) > 1 else 1, parts.microbatches),
        "leaves": leaves,
        "state_bytes_per_device": state_bytes,
        "memory": memory,
    }


def report(config, parts: DryRunParts | None = None, max_rows: int = 40) -> dict:
    """Prints the dry-run plan for `config` (and the runner's `parts`, if any) and returns it."""
    p = plan(config, parts)
    rows, length, micro = p["batch"]
    print(f"dry run: {config.experiment} ({config.get('variant', '')})")
    print(f"  update                {p['what']}")
    print(f"  parameters            {p['params']:,}")
    print(f"  mesh                  {p['mesh']} on {p['devices']} devices")
    print(f"  update batch          {rows} x {length}, {micro} microbatch(es)")
    print("  state sharding plan (per-device shard shape):")
    params = [r for r in p["leaves"] if r[0].startswith(".params")]
    for path, shape, spec, shard in params[:max_rows]:
        print(f"    {path:<60s} {str(shape):<20s} {str(spec):<28s} {shard}")
    if len(params) > max_rows:
        print(f"    ... {len(params) - max_rows} more parameter leaves")
    print(f"  state per device      {_gib(p['state_bytes_per_device'])} (params + optimizer)")
    m = p["memory"]
    print(
        f"  compiled step/device  arguments {_gib(m['argument'])}, outputs {_gib(m['output'])}, "
        f"temporaries {_gib(m['temp'])}, aliased {_gib(m['alias'])}"
    )
    peak = m["argument"] + m["output"] + m["temp"] - m["alias"]
    print(f"  peak estimate/device  {_gib(peak)} (arguments + outputs + temporaries - aliased)")
    p["peak_bytes_per_device"] = peak
    return p
