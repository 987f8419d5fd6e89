"""Run in a subprocess with 8 fake CPU devices: loss and grads equal across meshes.

Prints one JSON line per mesh with the max abs difference to the single-device result.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from models.sharding import batch_sharding, make_mesh, state_shardings  # noqa: E402
from models.transformer import Transformer, TransformerConfig  # noqa: E402
from train.lm import make_ar_loss  # noqa: E402
from train.state import TrainState, split_module  # noqa: E402
from train.step import make_update_step  # noqa: E402


def main():
    from flax import nnx

    cfg = TransformerConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64)
    toks = jax.random.randint(jax.random.key(0), (8, 16), 0, 64)
    batch = {"tokens": toks, "mask": jnp.ones((8, 16), bool), "loss_mask": jnp.ones((8, 16), bool)}

    def run(mesh_shape):
        model = Transformer(cfg, rngs=nnx.Rngs(0))
        graphdef, params, rest = split_module(model)
        tx = optax.sgd(1.0)  # one SGD step with lr 1: new - old == -grad
        state = TrainState.create(
            {"policy": params}, tx, jax.random.key(1), frozen={"policy": rest}
        )
        old = jax.tree.map(np.asarray, state.params)
        if mesh_shape is None:
            step = make_update_step(make_ar_loss(graphdef), tx, donate=False)
            new, m = step(state, batch)
        else:
            mesh = make_mesh(mesh_shape)
            ss = state_shardings(state, mesh)
            bs = jax.tree.map(lambda x: batch_sharding(mesh, x.ndim), batch)
            with jax.set_mesh(mesh):
                st = jax.device_put(state, ss)
                b = jax.device_put(batch, bs)
                step = make_update_step(
                    make_ar_loss(graphdef), tx, state_sharding=ss, batch_sharding=bs, donate=False
                )
                new, m = step(st, b)
                spec = str(
                    new.params["policy"]["blocks"][0]["mlp"]["w_gate_up"].value.sharding.spec
                )
        grads = jax.tree.map(lambda a, b: a - np.asarray(b), old, new.params)
        return float(m["train/loss"]), grads, (spec if mesh_shape else "")

    ref_loss, ref_g, _ = run(None)
    for shape in [(8, 1, 1), (2, 4, 1), (2, 2, 2)]:
        loss, g, spec = run(shape)
        diff = max(
            float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(ref_g), jax.tree.leaves(g))
        )
        print(
            json.dumps(
                {
                    "mesh": shape,
                    "loss_diff": abs(loss - ref_loss),
                    "grad_diff": diff,
                    "w_gate_spec": spec,
                }
            )
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
