"""The controller with stand-in executors (no model): version pinning per k, a failing, silent or
hung generator stops the run with an error naming it instead of hanging."""

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from models.sharding import make_mesh
from rl.distributed.channels import ChannelTimeout, Heartbeat, PeerDead, Rollout
from rl.distributed.controller import GeneratorFailed, run_controller
from rl.distributed.weight_sync import WeightChannel


class Trainer:
    def __init__(self, sharding):
        self.version, self.sharding, self.seen = 0, sharding, []

    def policy_params(self):
        return {"w": jax.device_put(jnp.full((4,), float(self.version)), self.sharding)}

    def train_step(self, batch):
        self.seen.append(batch["seq"])
        self.version += 1
        return {"train/loss": jnp.float32(batch["seq"])}


class Generator:
    def __init__(self, fail_at=None, stall_at=None, hang_at=None):
        self.fail_at, self.stall_at, self.used = fail_at, stall_at, {}
        self.hang_at, self.release = hang_at, threading.Event()

    def rollout(self, params, seq, version):
        if seq == self.fail_at:
            raise RuntimeError("generator crashed")
        if seq == self.hang_at:  # a generator stuck mid-rollout (released after the test)
            self.release.wait(60)
        if seq == self.stall_at:
            time.sleep(3.0)
        # The weight set really is version `version` (the trainer fills w with its version).
        self.used[seq] = (version, float(np.asarray(params["w"])[0]))
        return Rollout(seq, np.array([seq]), {"seq": seq}, 0.0, version)


@pytest.fixture(scope="module")
def sharding():
    return NamedSharding(make_mesh((1, 1, 1), jax.devices()[:1]), PartitionSpec())


@pytest.mark.parametrize("k", [0, 1, 2])
def test_versions_are_pinned_to_b_minus_k(sharding, k):
    tr, gen = Trainer(sharding), Generator()
    weights = WeightChannel({"w": sharding}, keep=k + 1, checksum=False)
    stats = run_controller(tr, gen, weights, num_steps=6, max_staleness=k, timeout_s=10)
    assert tr.seen == list(range(6)) and stats.steps == 6
    for seq in range(6):
        assert gen.used[seq] == (max(seq - k, 0), float(max(seq - k, 0)))
    assert stats.gate["staleness/max"] == min(k, 5) and stats.gate["staleness/dropped"] == 0


def test_a_failing_generator_stops_the_run(sharding):
    tr = Trainer(sharding)
    weights = WeightChannel({"w": sharding}, keep=2, checksum=False)
    with pytest.raises(GeneratorFailed, match="generator crashed"):
        run_controller(tr, Generator(fail_at=2), weights, num_steps=6, max_staleness=1)
    assert tr.seen == [0, 1]


def test_a_silent_generator_times_out(sharding):
    tr = Trainer(sharding)
    weights = WeightChannel({"w": sharding}, keep=1, checksum=False)
    t0 = time.perf_counter()
    with pytest.raises(ChannelTimeout, match="not responding"):
        run_controller(
            tr, Generator(stall_at=1), weights, num_steps=4, max_staleness=0, timeout_s=0.5
        )
    assert time.perf_counter() - t0 < 10


def test_a_hung_generator_is_reported_by_its_heartbeat(sharding):
    """The generator stops beating mid-run (stuck inside rollout 3, k=1): the trainer raises
    PeerDead naming the role and the last heartbeat within the heartbeat timeout, not the much
    longer channel timeout."""
    tr, gen = Trainer(sharding), Generator(hang_at=3)
    weights = WeightChannel({"w": sharding}, keep=2, checksum=False)
    t0 = time.perf_counter()
    try:
        with pytest.raises(PeerDead) as err:
            run_controller(
                tr, gen, weights, num_steps=8, max_staleness=1, timeout_s=60, heartbeat_s=1.0
            )
    finally:
        gen.release.set()
    took = time.perf_counter() - t0
    msg = str(err.value)
    assert "generator (thread) heartbeat timed out after 1.0 s" in msg, msg
    assert "last heartbeat" in msg and "sampling rollout 3 with v2" in msg, msg
    assert tr.seen == [0, 1, 2] and took < 10, took


def test_heartbeat_reports_a_dead_role_and_a_silent_one():
    hb = Heartbeat("generator (process 1)", timeout_s=0.2)
    hb.beat("rollout 4 sent")
    hb.check(alive=lambda: True)  # fresh and alive: no error
    with pytest.raises(PeerDead, match=r"generator \(process 1\) is dead .*rollout 4 sent"):
        hb.check(alive=lambda: False)
    time.sleep(0.3)
    with pytest.raises(PeerDead, match=r"timed out after 0.2 s .*last heartbeat 0\.\d s ago"):
        hb.check()


def test_mesh_shape_is_refused_not_ignored(tmp_path):
    """llamarl builds its own trainer/generator meshes, so a mesh_shape flag is an error."""
    from configs.llamarl import get_config
    from models.errors import UserError
    from rl.distributed.run import build

    config = get_config("tiny")
    config.mesh_shape = (3, 1, 1)
    with pytest.raises(UserError, match="llamarl.trainer_mesh"):
        build(config, str(tmp_path), writer=None)
