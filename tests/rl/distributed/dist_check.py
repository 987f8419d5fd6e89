"""Run in a subprocess with 8 fake CPU devices (see test_weight_sync.py); prints one JSON line."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["LMRL_NO_PROGRESS"] = "1"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def _params(mesh):
    from flax import nnx

    from models.sharding import state_shardings
    from models.transformer import Transformer, TransformerConfig
    from train.state import split_module

    cfg = TransformerConfig(
        vocab_size=16, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_len=16
    )
    _, p, _ = split_module(Transformer(cfg, rngs=nnx.Rngs(params=0)))
    return p, lambda m: state_shardings(p, m)


def weight_sync():
    from models.sharding import make_mesh
    from rl.distributed.weight_sync import (
        WeightChannel,
        WeightSyncError,
        same_layout,
        sync_trainer_to_generator,
    )

    d = jax.devices()
    tmesh = make_mesh((1, 2, 2), d[:4])
    p, shard = _params(tmesh)
    src = jax.device_put(p, shard(tmesh))
    out = {}
    for name, gshape in [("equal", (1, 2, 2)), ("different", (1, 1, 4)), ("dp", (4, 1, 1))]:
        gmesh = make_mesh(gshape, d[4:])
        want = shard(gmesh)
        moved, rep = sync_trainer_to_generator(src, want, version=1, bucket_bytes=4096)
        a, b = jax.tree.leaves(src), jax.tree.leaves(moved)
        ws = jax.tree.leaves(want, is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding))
        out[name] = {
            "bitwise": all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b)),
            "dtype": all(x.dtype == y.dtype for x, y in zip(a, b)),
            "on_generator": all(
                set(y.devices()) <= set(d[4:]) and y.sharding.spec == w.spec for y, w in zip(b, ws)
            ),
            "buckets": rep.buckets,
            "two_hop": rep.two_hop_leaves,
            "leaves": len(a),
            "specs_differ": sum(x.sharding.spec != w.spec for x, w in zip(a, ws)),
            "layouts_differ": sum(not same_layout(x.sharding, w) for x, w in zip(a, ws)),
        }
    gmesh = make_mesh((1, 1, 4), d[4:])
    moved, rep = sync_trainer_to_generator(src, shard(gmesh), version=2, cast_dtype=jnp.bfloat16)
    rel = max(
        float(np.max(np.abs(np.asarray(y, np.float32) - np.asarray(x)) / (np.abs(x) + 1e-30)))
        for x, y in zip(jax.tree.leaves(src), jax.tree.leaves(moved))
    )
    out["bf16"] = {
        "dtype": sorted({str(y.dtype) for y in jax.tree.leaves(moved)}),
        "max_rel_err": rel,
        "bytes_ratio": rep.bytes / sum(x.nbytes for x in jax.tree.leaves(src)),
    }
    # Co-located (same devices, same layout): the set must not alias the trainer's buffers,
    # which the next update donates.
    own = jax.tree.map(jnp.copy, src)
    moved, _ = sync_trainer_to_generator(own, shard(tmesh), version=3)
    jax.tree.map(lambda x: x.delete(), own)
    out["colocated_survives_donation"] = all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(src), jax.tree.leaves(moved))
    )
    ch = WeightChannel(shard(gmesh), keep=2, timeout_s=1.0)
    versions = []
    for v in (0, 1, 2):
        ch.publish(src, v)
        versions.append(ch.latest_version)
    try:
        ch.publish(src, 2)
        out["refused_old_version"] = False
    except WeightSyncError:
        out["refused_old_version"] = True
    out["versions"] = versions
    out["kept"] = sorted(ch._sets)
    out["exact_1"] = ch.wait_for(1, exact=True)[0]
    out["newest"] = ch.wait_for(0)[0]
    return out


def _patch_dense_reward(run_mod):
    from train.sft import make_task_and_tokenizer

    def dense_task(config):
        # A 2-step SFT policy never answers correctly, so the exact-match reward is flat and the
        # advantages are zero. A dense stand-in (fraction of digits in the completion) gives
        # non-zero advantages, so the loop, the importance weights and the staleness are tested
        # on real updates. (Learning the real task is not tested here.)
        task, tok = make_task_and_tokenizer(config)

        def reward(text, example, compat="fixed"):
            return sum(ch.isdigit() for ch in text) / max(len(text), 1)

        task.reward = reward
        return task, tok

    run_mod.make_task_and_tokenizer = dense_task


def loop():
    """configs/llamarl.py:tiny in sync (twice), async (k=1) and async_k (k=2) on 8 devices."""
    import tempfile

    from configs import llamarl
    from rl.distributed import run as run_mod

    _patch_dense_reward(run_mod)
    run = run_mod.run
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name, arg in [
            ("sync", "tiny,mode=sync"),
            ("sync_again", "tiny,mode=sync"),
            ("async", "tiny,mode=async"),
            ("async_again", "tiny,mode=async"),
            ("async_k", "tiny,mode=async_k,k=2"),
            ("async_ratio", "tiny,mode=async,variant=ratio"),
        ]:
            c = llamarl.get_config(arg)
            c.rl.steps = 6
            c.rl_optim.lr = 1e-2
            c.rl.sft_dir = os.path.join(d, "sft")
            c.lock()
            wd = os.path.join(d, name)
            res = run(c, wd)
            rows = [json.loads(x) for x in open(os.path.join(wd, "metrics.jsonl"))]
            rl = [r for r in rows if "llamarl/seq" in r]
            out[name] = {
                "result": res,
                "loss": [r["train/loss"] for r in rl],
                "is_mean": [r["aipo/is_mean"] for r in rl],
                "kl_k3": [r["aipo/mismatch_kl_k3"] for r in rl],
                "lag": [r["staleness/lag"] for r in rl],
                "seq": [r["llamarl/seq"] for r in rl],
                "denom": [r["train/denom"] for r in rl],
                "reward": [r["rl/reward_mean"] for r in rl],
                "ratio_max": [r["aipo/ratio_max"] for r in rl],
            }
    return out


def resume():
    """async (k=1) on 8 devices: 6 steps uninterrupted vs killed at step 4 and resumed from the
    step-2 checkpoint (same workdir)."""
    import tempfile

    from configs import llamarl
    from rl.distributed import executors
    from rl.distributed import run as run_mod

    _patch_dense_reward(run_mod)

    def config(d):
        c = llamarl.get_config("tiny,mode=async")
        c.rl.steps = 6
        c.rl_optim.lr = 1e-2
        c.rl.sft_dir = os.path.join(d, "sft")
        c.ckpt_every = 2
        c.lock()
        return c

    def rl_rows(wd):
        rows = [json.loads(x) for x in open(os.path.join(wd, "metrics.jsonl"))]
        return [r for r in rows if "llamarl/seq" in r]

    out = {}
    with tempfile.TemporaryDirectory() as d:
        full = os.path.join(d, "full")
        run_mod.run(config(d), full)
        out["full_loss"] = [r["train/loss"] for r in rl_rows(full)]
        out["full_seq"] = [r["llamarl/seq"] for r in rl_rows(full)]
        killed = os.path.join(d, "killed")
        real_step = executors.TrainerExecutor.train_step

        def dying_step(self, batch):
            if self.version == 3:
                raise KeyboardInterrupt("simulated kill at step 4")
            return real_step(self, batch)

        executors.TrainerExecutor.train_step = dying_step
        try:
            run_mod.run(config(d), killed)
        except KeyboardInterrupt:
            out["killed"] = True
        executors.TrainerExecutor.train_step = real_step
        out["frontier_files"] = sorted(os.listdir(os.path.join(killed, "frontier")))
        res = run_mod.run(config(d), killed)
        out["resumed_loss"] = [r["train/loss"] for r in rl_rows(killed)]
        out["resumed_seq"] = [r["llamarl/seq"] for r in rl_rows(killed)]
        out["resumed_steps"] = res["steps"]
    return out


def learn():
    """configs/llamarl.py:fixed_prompts (its own SFT warm start, 20 RL steps, the real exact-match
    reward) on 8 devices in sync, async and async_k, and the lr=0 control: with frozen weights
    every mode samples the same rollouts, so it is each mode's paired baseline."""
    import tempfile

    from configs import llamarl
    from rl.distributed.run import run

    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name, arg, control in [
            ("lr0", "mode=sync", "lr0"),
            ("sync", "mode=sync", "none"),
            ("async", "mode=async", "none"),
            ("async_k", "mode=async_k,k=2", "none"),
        ]:
            c = llamarl.get_config("fixed_prompts," + arg)
            c.rl.control = control
            c.rl.sft_dir = os.path.join(d, "sft")
            c.ckpt_every = 0
            c.lock()
            wd = os.path.join(d, name)
            res = run(c, wd)
            rows = [json.loads(x) for x in open(os.path.join(wd, "metrics.jsonl"))]
            rl = [r for r in rows if "llamarl/seq" in r]
            out[name] = {
                "layout": res["layout"],
                "reward": [r["rl/reward_mean"] for r in rl],
                "is_mean": [r["aipo/is_mean"] for r in rl],
                "lag": [r["staleness/lag"] for r in rl],
            }
    return out


if __name__ == "__main__":
    mode = sys.argv[1]
    modes = {"weight_sync": weight_sync, "loop": loop, "resume": resume, "learn": learn}
    print(json.dumps(modes[mode]()))
