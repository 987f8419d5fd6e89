"""Runtime: mesh validation, sharded state creation, layout refusal, finish, dry run."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections as mlc
import optax
import pytest

from models.sharding import MeshError
from train.checkpoint import Checkpointer, CheckpointError
from train.metrics import MetricWriter
from train.runtime import Runtime, finish
from train.state import TrainState

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _cfg(shape):
    return mlc.ConfigDict({"mesh_shape": shape})


@pytest.mark.parametrize(
    "shape, match",
    [
        ((3, 1, 1), r"needs 3 devices but this run has 1"),
        ((-1, 2, 1), r"cannot be split into groups of 2"),
        ((2, 2), r"3 entries"),
        ((0, 1, 1), r"positive"),
    ],
)
def test_mesh_shape_that_does_not_fit_is_a_clear_error(shape, match):
    with pytest.raises(MeshError, match=match):
        Runtime(_cfg(shape))
    assert issubclass(MeshError, ValueError)  # shown by launch.main as one line


def test_one_device_runtime_creates_puts_and_steps():
    rt = Runtime(_cfg((-1, 1, 1)))
    tx = optax.sgd(0.1)

    def init():
        return TrainState.create({"policy": {"w": jnp.ones((3,))}}, tx, jax.random.key(0))

    state = rt.create_state(init)
    batch = rt.put({"x": jnp.ones((4, 3)).__array__()})

    def loss(params, frozen, b, rng):
        return jnp.sum((b["x"] @ params["policy"]["w"]) ** 2), jnp.float32(4.0), {}

    state, m = rt.update_step(loss, tx)(state, batch)
    assert int(state.step) == 1 and float(m["train/loss"]) == pytest.approx(9.0)


def test_layout_mismatch_is_refused_naming_the_option(tmp_path):
    state = TrainState.create({"policy": {"w": jnp.ones((3,))}}, optax.sgd(1.0), jax.random.key(0))
    ck = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    ck.save(1, state, {"scan_layers": False, "loop_step": 1})
    ck.wait()
    rt = Runtime(_cfg((-1, 1, 1)))
    with pytest.raises(CheckpointError, match=r"scan_layers=False but this run has scan_layers"):
        rt.restore(ck, state, expect={"scan_layers": True})
    _, extra, resumed = rt.restore(ck, state, expect={"scan_layers": False})
    assert resumed and extra["loop_step"] == 1
    ck.close()


def test_finish_writes_result_and_plot(tmp_path, capsys):
    w = MetricWriter(str(tmp_path), tensorboard=False, console=False)
    for s in (1, 2):
        w.write(s, {"train/loss": 1.0 / s})
    w.close()
    out = finish(
        str(tmp_path),
        {"train/loss": jnp.float32(0.5), "note": "ok"},
        metrics_path=w.jsonl_path,
        plot_keys=["train/loss"],
        title="demo",
    )
    assert out == {"train/loss": 0.5, "note": "ok"}
    assert json.loads((tmp_path / "result.json").read_text()) == out
    assert (tmp_path / "plot.png").stat().st_size > 0
    assert "demo" in capsys.readouterr().out


def test_dry_run_plan_for_sft_tiny():
    from configs import sft
    from models.transformer import TransformerConfig
    from train.dry_run import plan

    c = sft.get_config("tiny")
    p = plan(c)
    assert p["params"] == TransformerConfig.from_config(c.model, vocab_size=p["vocab"]).num_params()
    assert p["memory"]["temp"] > 0 and p["memory"]["argument"] >= p["state_bytes_per_device"] // 2
    assert any("w_gate" in row[0] for row in p["leaves"])


def _check(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "runtime_check.py"), mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])


def test_state_is_created_sharded_on_eight_devices():
    r = _check("sharding")
    assert r["devices"] == 8 and r["n_shards"] == 8
    assert r["spec"] == "P('fsdp', 'tensor')" and r["shard"] == [16, 32]  # of [32, 64]
    assert "P('fsdp', 'tensor')" in r["opt_specs"]  # Adam moments follow the parameters


@pytest.mark.slow
def test_sft_tiny_on_mesh_222_matches_one_device():
    r = _check("sft")
    for k, v in r["one"].items():
        assert r["mesh"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
