"""Checkpointer: round trip with extra metadata, keep-N, and clear errors on corrupt data."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train.checkpoint import Checkpointer, CheckpointError
from train.state import TrainState


def _state():
    return TrainState.create(
        {"policy": {"w": jnp.arange(4.0)}}, optax.adam(1e-3), jax.random.key(7)
    )


def test_round_trip_and_keep(tmp_path):
    ck = Checkpointer(str(tmp_path / "ckpt"), keep=2, async_save=False)
    s = _state()
    for step in (1, 2, 3):
        ck.save(step, s.replace(step=jnp.int32(step)), {"data_pos": step * 10})
    ck.wait()
    assert ck.all_steps() == [2, 3]
    restored, extra = ck.restore(_state())
    assert int(restored.step) == 3 and extra == {"data_pos": 30}
    np.testing.assert_array_equal(restored.params["policy"]["w"], s.params["policy"]["w"])
    assert jax.random.key_data(restored.rng).tolist() == jax.random.key_data(s.rng).tolist()


def test_empty_dir_restores_none(tmp_path):
    assert Checkpointer(str(tmp_path / "none")).restore(_state()) is None


def test_corrupt_checkpoint_raises_named_error(tmp_path):
    d = tmp_path / "ckpt"
    ck = Checkpointer(str(d), async_save=False)
    ck.save(5, _state(), {})
    ck.wait()
    for root, _, files in os.walk(d / "5"):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"garbage")
    with pytest.raises(CheckpointError, match=str(d / "5")):
        Checkpointer(str(d)).restore(_state())


def test_checkpoint_path_is_a_file(tmp_path):
    p = tmp_path / "file"
    p.write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        Checkpointer(str(p))


def _flip(step_dir):
    files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir / "state") for f in fs]
    data_files = [f for f in files if os.sep + "d" + os.sep in f]
    path = max(data_files, key=os.path.getsize)
    data = bytearray(open(path, "rb").read())
    for i in range(len(data) // 3, len(data), 97):
        data[i] ^= 0x10
    with open(path, "wb") as fh:
        fh.write(data)


def test_metrics_and_log_offset_round_trip(tmp_path):
    ck = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    ck.save(4, _state(), {"rl_step": 2}, metrics={"train/loss": 0.5}, log_offset=123)
    ck.wait()
    assert ck.metrics_at(4) == ({"train/loss": 0.5}, 123)
    _, extra = ck.restore(_state())
    assert extra == {"rl_step": 2}  # the reserved keys stay inside the checkpoint


def test_bit_flip_is_refused_naming_the_previous_good_step(tmp_path):
    d = tmp_path / "ckpt"
    ck = Checkpointer(str(d), keep=3, async_save=False)
    big = {"policy": {"w": jnp.linspace(0.0, 1.0, 4096)}}
    for step in (1, 2):
        s = TrainState.create(big, optax.adam(1e-3), jax.random.key(step))
        ck.save(step, s.replace(step=jnp.int32(step)))
    ck.close()
    _flip(d / "2")
    abstract = TrainState.create(big, optax.adam(1e-3), jax.random.key(0))
    with pytest.raises(CheckpointError, match="step 2 .*previous good checkpoint is step 1"):
        Checkpointer(str(d)).restore(abstract)
    state, _ = Checkpointer(str(d), fallback=True).restore(abstract)
    assert int(state.step) == 1
    assert os.listdir(f"{d}.rejected") and Checkpointer(str(d)).all_steps() == [1]


def test_non_finite_state_is_not_saved_and_not_restored(tmp_path):
    ck = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    bad = _state().replace(params={"policy": {"w": jnp.array([1.0, jnp.inf, 0.0, 0.0])}})
    with pytest.raises(CheckpointError, match="step 3 has non-finite values"):
        ck.save(3, bad)
    assert ck.all_steps() == []


def test_keep_below_one_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="keep_checkpoints must be >= 1"):
        Checkpointer(str(tmp_path / "ckpt"), keep=0)


def test_fingerprint_sees_one_flipped_bit_and_names_non_finite_leaves():
    from train.fingerprint import fingerprint

    w = np.linspace(-1.0, 1.0, 1000).astype(np.float32)
    flipped = w.copy()
    flipped.view(np.uint32)[517] ^= 1 << 3
    tree = {"a": jnp.asarray(w), "k": jax.random.key(0), "n": jnp.arange(3)}
    base = fingerprint(tree)
    assert base == fingerprint(jax.tree.map(lambda x: x, tree)) and base["nonfinite"] == []
    assert fingerprint({**tree, "a": jnp.asarray(flipped)})["sha256"] != base["sha256"]
    swapped = w.copy()
    swapped[[3, 4]] = swapped[[4, 3]]
    assert fingerprint({**tree, "a": jnp.asarray(swapped)})["sha256"] != base["sha256"]
    bad = fingerprint({**tree, "a": jnp.asarray(w).at[0].set(jnp.nan)})
    assert bad["nonfinite"] == ["['a']"]


def test_pre_fusion_checkpoint_is_refused_naming_the_converter(tmp_path):
    """A checkpoint with separate wq/wk/wv (written before the fusion) names `fuse_projections`;
    converted with it, the same trees restore."""
    from models.layout import fuse_projections

    d, h, k, hd = 4, 2, 1, 2
    old = {"attn": {n: jnp.ones((d, m, hd)) for n, m in (("wq", h), ("wk", k), ("wv", k))}}

    def state(params):
        return TrainState.create({"policy": params}, optax.sgd(1e-3), jax.random.key(0))

    ck = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    ck.save(1, state(old), {})
    ck.wait()
    with pytest.raises(CheckpointError, match="fused into wqkv.*models.layout.fuse_projections"):
        ck.restore(state(fuse_projections(old)))
    assert fuse_projections(old)["attn"]["wqkv"].shape == (d, k, h // k + 2, hd)
