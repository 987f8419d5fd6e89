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
