"""`--dry_run`: the parameter count, per-device sharding plan and compiled memory of a config.

Nothing is initialised: shapes come from `jax.eval_shape` and the update step is lowered and
compiled against abstract, sharded arguments, so `configs/spg.py:llada8b` is checked without its
weights. The memory figures are XLA's `memory_analysis()` of the compiled step for one device of
the mesh, on the backend this runs on (run it on the target hardware, or with fake CPU devices for
a CPU estimate of the sharding).

What is compiled: the policy Transformer's supervised LM update (`ar` if causal, else `mdlm`)
with the config's optimizer and microbatches, at the batch shape of one update: `sft.batch_size` x
`sft.max_len`, or for RL configs `rl.prompts_per_step * rl.group_size` rows of
`rl.max_prompt_len + rl.gen_len` (or `max_new_tokens`) tokens with `rl_optim`. RL objectives'
extra forward passes (Monte Carlo masks, a reference policy) are not included; the state
(parameters + optimizer) is exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from train.optim import make_optimizer
from train.runtime import Runtime

_LM_EXPERIMENTS = ("sft", "spg", "grpo", "jepo")


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


def _update_shape(config) -> tuple[int, int, dict, int]:
    """(rows, length, optimizer config, microbatches) of one update for this config."""
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


def plan(config) -> dict:
    """Computes the dry-run report for `config` (see the module docstring).

    Returns:
      dict with `params`, `mesh`, `devices`, `leaves` (path, shape, spec, per-device shape),
      `state_bytes_per_device` and the compiled step's `memory` (bytes per device).

    Raises:
      ValueError: the experiment has no Transformer policy to plan (yet).
    """
    from train.sft import make_lm_init, make_lm_loss

    if config.experiment not in _LM_EXPERIMENTS:
        raise ValueError(
            f"--dry_run supports {', '.join(_LM_EXPERIMENTS)}; {config.experiment!r} is not "
            "on the shared runtime yet"
        )
    rt = Runtime(config)
    rows, length, optim, micro = _update_shape(config)
    tx = make_optimizer(optim)
    vocab = _vocab_size(config)
    causal = bool(config.model.get("causal", True))
    max_len = max(int(config.model.max_len), length)
    graphdef, init = make_lm_init(config, vocab, tx, causal=causal, max_len=max_len, seed=0)
    shapes, shardings = rt.abstract_state(init)
    rt.state_sharding = shardings
    abstract = jax.jit(init, out_shardings=shardings).eval_shape()

    class _Ids:  # only the ids the mdlm loss needs
        mask_id, eos_id = 3, 2

    loss_fn = make_lm_loss("ar" if causal else "mdlm", graphdef, _Ids)
    update = rt.update_step(loss_fn, tx, microbatches=micro)
    host = {
        "tokens": np.zeros((rows, length), np.int32),
        "mask": np.zeros((rows, length), bool),
        "loss_mask": np.zeros((rows, length), bool),
        "prompt_mask": np.zeros((rows, length), bool),
    }
    from models.sharding import batch_shardings

    batch = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
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
    return {
        "params": n_params,
        "vocab": vocab,
        "mesh": dict(rt.mesh.shape),
        "devices": rt.num_devices,
        "batch": (rows, length, micro),
        "leaves": leaves,
        "state_bytes_per_device": state_bytes,
        "memory": memory,
    }


def report(config, max_rows: int = 40) -> dict:
    """Prints the dry-run plan for `config` and returns it."""
    p = plan(config)
    rows, length, micro = p["batch"]
    print(f"dry run: {config.experiment} ({config.get('variant', '')})")
    print(f"  parameters            {p['params']:,}")
    print(f"  mesh                  {p['mesh']} on {p['devices']} devices")
    print(f"  update batch          {rows} x {length} tokens, {micro} microbatch(es)")
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
