"""Run in a subprocess with 8 fake CPU devices (see test_runtime.py); prints one JSON line.

`sharding`: the state is created sharded on a (2,2,2) mesh (no device holds a whole matrix).
`sft`: configs/sft.py:tiny on (2,2,2) ends with the metrics of a one-device run.
"""

import json
import os
import sys
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["LMRL_NO_PROGRESS"] = "1"

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from configs import sft as sft_config  # noqa: E402
from train.runtime import Runtime  # noqa: E402


def sharding():
    from train.optim import make_optimizer
    from train.sft import make_lm_init

    c = sft_config.get_config("tiny")
    c.mesh_shape = (2, 2, 2)
    rt = Runtime(c)
    tx = make_optimizer(dict(c.optim))
    _, init = make_lm_init(c, 40, tx, causal=True, max_len=64, seed=0)
    state = rt.create_state(init)
    w = state.params["policy"]["blocks"][0]["mlp"]["w_gate_up"].get_value()
    mu = state.opt_state
    return {
        "devices": jax.device_count(),
        "spec": str(w.sharding.spec),
        "shape": list(w.shape),
        "shard": list(w.addressable_shards[0].data.shape),
        "n_shards": len(w.addressable_shards),
        "opt_specs": sorted({str(x.sharding.spec) for x in jax.tree.leaves(mu) if x.ndim == 2}),
    }


def sft():
    from data.tokenizer import CharTokenizer  # noqa: F401
    from train.metrics import MetricWriter
    from train.sft import make_task_and_tokenizer, sft_stage

    out = {}
    for name, shape, devices in [("one", (1, 1, 1), jax.devices()[:1]), ("mesh", (2, 2, 2), None)]:
        c = sft_config.get_config("tiny")
        c.mesh_shape = shape
        task, tok = make_task_and_tokenizer(c)
        with tempfile.TemporaryDirectory() as d:
            w = MetricWriter(d, tensorboard=False, console=False)
            res = sft_stage(
                c,
                d,
                task=task,
                tokenizer=tok,
                writer=w,
                objective="ar",
                runtime=Runtime(c, devices),
            )
            w.close()
        out[name] = {k: float(v) for k, v in res.metrics.items()}
    return out


if __name__ == "__main__":
    print(json.dumps({"sharding": sharding, "sft": sft}[sys.argv[1]]()))
    sys.stdout.flush()
