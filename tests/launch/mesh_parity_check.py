"""Run in a subprocess with 8 fake CPU devices: samplers and federated clients on a mesh.

`samplers`: the diffusion and AR samplers with parameters sharded over mesh (2,2,2) and the
prompt batch split over (data, fsdp) return the same tokens as on one device (greedy and
sampled, equal keys). `fed`: the vmap backend with the client axis on the mesh returns the
same aggregate as on one device, and its per-client outputs are split over the mesh.
`spg_update`: two SPG updates (k3 KL, AdamW) on a batch with non-zero advantages, state created
sharded on mesh (2,2,2) through `Runtime`, end at the 1-device parameters and metrics (fp32
rounding). `:tiny` runs cannot show this: their untrained model earns no reward, every group is
flat and `rl.skip_flat_batches` skips the update. Prints one JSON line.
"""

import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["JAX_NUM_CPU_DEVICES"] = "8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from models.sharding import batch_shardings, make_mesh, state_shardings  # noqa: E402


def _place(mesh, params, rest, batch):
    """Parameters on their logical shardings, the batch split over (data, fsdp)."""
    put = lambda t: jax.device_put(t, state_shardings(t, mesh))  # noqa: E731
    return put(params), put(rest), jax.device_put(batch, batch_shardings(batch, mesh))


def samplers() -> dict:
    from flax import nnx

    from models.transformer import Transformer, TransformerConfig
    from rl.sampling import autoregressive as ar
    from rl.sampling import diffusion as ds
    from train.state import split_module

    out = {}
    prompt = np.random.default_rng(0).integers(4, 64, (8, 6)).astype(np.int32)
    prompt[:2, :2] = 0  # left padding on two rows
    batch = {"tokens": prompt, "mask": prompt != 0}
    mesh = make_mesh((2, 2, 2))
    for causal in (False, True):
        cfg = TransformerConfig(
            vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
            max_len=32, causal=causal,
        )  # fmt: skip
        graphdef, params, rest = split_module(Transformer(cfg, rngs=nnx.Rngs(0)))
        for temp in (0.0, 1.0):
            if causal:
                fn = ar.make_sampler(
                    graphdef, max_new_tokens=8, eos_id=2, temperature=max(temp, 1.0),
                    greedy=temp == 0.0,
                )  # fmt: skip
                name = f"ar_{'greedy' if temp == 0 else 'sampled'}"
            else:
                fn = ds.make_sampler(
                    graphdef, gen_len=8, block_len=4, steps=8, mask_id=3, temperature=temp
                )
                name = f"diffusion_{'greedy' if temp == 0 else 'sampled'}"

            def run(p, r, b, fn=fn, causal=causal):
                res = fn(p, r, b["tokens"], b["mask"], jax.random.key(7))
                return np.asarray(res.tokens if causal else res)

            one = run(params, rest, batch)
            p, r, b = _place(mesh, params, rest, batch)
            with jax.set_mesh(mesh):
                many = run(p, r, b)
            sharded = any(
                len(x.sharding.device_set) > 1 and not x.sharding.is_fully_replicated
                for x in jax.tree.leaves(p)
            )
            out[name] = {
                "equal": bool(np.array_equal(one, many)),
                "params_sharded": sharded,
                "batch_split": str(b["tokens"].sharding.spec),
            }
    return out


def fed() -> dict:
    from fed import simulation

    rng = np.random.default_rng(0)
    c, s, bsz, d = 8, 3, 4, 5
    w_true = rng.normal(size=(d,)).astype(np.float32)
    x = rng.normal(size=(c, s, bsz, d)).astype(np.float32)
    block = simulation.ClientBlock(
        batches={"x": x, "y": x @ w_true}, mask_csb=rng.random((c, s, bsz)) < 0.8
    )

    def loss_fn(shared, personal, batch, mask_b):
        err = batch["x"] @ shared["w"] + personal["b"] - batch["y"]
        return jnp.sum(jnp.where(mask_b, err**2, 0.0)), jnp.sum(mask_b).astype(jnp.float32)

    work = simulation.make_sgd_client_work(loss_fn, 0.1)
    shared = {"w": jnp.zeros((d,))}
    personal = {"b": jnp.zeros((c,))}
    keys = jax.random.split(jax.random.key(0), c)
    mesh = make_mesh((2, 2, 2))
    one = simulation.make_vmap_runner(work)(shared, personal, block, keys)
    many = simulation.make_vmap_runner(work, mesh=mesh)(shared, personal, block, keys)
    diff = max(
        float(jnp.max(jnp.abs(jnp.asarray(a) - jnp.asarray(b))))
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many), strict=True)
    )
    return {"max_abs_diff": diff, "personal_spec": str(many[2]["b"].sharding.spec)}


def spg_update() -> dict:
    from flax import nnx

    from models.transformer import Transformer, TransformerConfig
    from rl import objectives
    from train.optim import make_optimizer
    from train.runtime import Runtime
    from train.state import TrainState, split_module

    cfg = TransformerConfig(
        vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_len=32,
        causal=False,
    )  # fmt: skip
    graphdef, params, rest = split_module(Transformer(cfg, rngs=nnx.Rngs(0)))
    fields = {"kl_coef": 0.05, "group_size": 4, "bound": "mix", "mask_block_len": 4}
    obj = objectives.get("spg")(graphdef, fields, mask_id=3)
    tx = make_optimizer({"lr": 1e-3, "schedule": "constant", "warmup_steps": 0, "b2": 0.99})
    rng = np.random.default_rng(0)
    batch = {
        "prompt": rng.integers(4, 64, (8, 6)).astype(np.int32),
        "prompt_mask": np.ones((8, 6), bool),
        "completion": rng.integers(4, 64, (8, 8)).astype(np.int32),
        "valid": np.ones((8, 8), bool),
        "advantage": rng.normal(size=8).astype(np.float32),
        "row_mask": np.ones(8, bool),
    }

    def init(params, rest):
        frozen = objectives.initial_frozen(obj, params, {"policy": rest})
        return TrainState.create({"policy": params}, tx, jax.random.key(1), frozen=frozen)

    def train(rt):
        state = rt.create_state(init, params, rest)
        update = rt.update_step(obj.loss_fn, tx)
        for _ in range(2):
            state, m = update(state, rt.put(batch))
        return jax.device_get((state.params, m)), state

    (p1, m1), _ = train(Runtime({"mesh_shape": (1, 1, 1)}, jax.devices()[:1]))
    (p8, m8), s8 = train(Runtime({"mesh_shape": (2, 2, 2)}))
    moved = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves({"policy": params}), strict=True)
    )
    diff = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8), strict=True)
    )
    return {
        "param_max_abs_diff": diff,
        "param_moved": moved,
        "metrics_one": {k: float(v) for k, v in m1.items()},
        "metrics_many": {k: float(v) for k, v in m8.items()},
        "params_sharded": any(
            not x.sharding.is_fully_replicated for x in jax.tree.leaves(s8.params)
        ),
    }


if __name__ == "__main__":
    modes = {"samplers": samplers, "fed": fed, "spg_update": spg_update}
    print(json.dumps(modes[sys.argv[1]]()))
