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
from child_env import child_env, run_check

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


def _dry_run(config, *flags, devices=1, workdir="never_created"):
    env = child_env(devices)
    cmd = [sys.executable, "-m", "launch.main", f"--config={config}", "--dry_run"]
    cmd += [f"--workdir={workdir}", *flags]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _field(text, label):
    line = next(ln for ln in text.splitlines() if ln.strip().startswith(label))
    return line.strip()[len(label) :].strip()


def test_dry_run_for_sft_tiny_prints_the_plan_and_writes_nothing(tmp_path):
    from configs import sft
    from data.tokenizer import CharTokenizer
    from models.transformer import TransformerConfig

    w = tmp_path / "w"
    text = _dry_run("configs/sft.py:tiny", "--config.mesh_shape=(2,2,2)", devices=8, workdir=w)
    vocab = CharTokenizer().vocab_size
    want = TransformerConfig.from_config(sft.get_config("tiny").model, vocab_size=vocab)
    assert int(_field(text, "parameters").replace(",", "")) == want.num_params()
    assert "temporaries" in _field(text, "compiled step/device")
    # d_model 32 over fsdp=2, d_ff 64 over tensor=2: each device holds a [16, 2, 32] shard.
    row = next(ln for ln in text.splitlines() if "['mlp']['w_gate_up']" in ln)
    assert "P('fsdp', None, 'tensor')" in row and row.rstrip().endswith("(16, 2, 32)"), row
    assert not w.exists()


@pytest.mark.slow
def test_dry_run_llada8b_from_shapes_only():
    text = _dry_run(
        "configs/spg.py:llada8b",
        "--config.model.scan_layers=True",
        "--config.mesh_shape=(1,4,2)",
        devices=8,
    )
    assert _field(text, "parameters") == "8,015,581,184"
    assert "P(None, 'fsdp', None, 'tensor')" in text  # stacked w_gate_up: layers, embed, -, mlp
    assert _field(text, "peak estimate/device").endswith(")")


def _check(mode: str) -> dict:
    return run_check(os.path.join(HERE, "runtime_check.py"), mode, timeout=600)


@pytest.mark.slow
def test_state_is_created_sharded_on_eight_devices():
    r = _check("sharding")
    assert r["devices"] == 8 and r["n_shards"] == 8
    assert r["spec"] == "P('fsdp', None, 'tensor')" and r["shard"] == [16, 2, 32]  # of [32, 2, 64]
    assert "P('fsdp', 'tensor')" in r["opt_specs"]  # Adam moments follow the parameters


@pytest.mark.slow
def test_sft_tiny_on_mesh_222_matches_one_device():
    r = _check("sft")
    for k, v in r["one"].items():
        assert r["mesh"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
