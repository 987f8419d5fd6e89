"""`--multihost` end to end on one machine: 2 processes x 4 fake CPU devices on 127.0.0.1.

The processes talk through jax.distributed (coordinator on a free local port) with gloo CPU
collectives and train configs/sft.py:tiny on mesh (2,2,2). Its checkpoint must restore in a
1-process run, and (slow) its metrics must equal a 1-process 8-device run and a 1-device run.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = "configs/sft.py:tiny"
KEYS = ("train/loss", "sft/test_loss", "sft/test_acc")


def _env(devices: int) -> dict:
    env = {**os.environ, "LMRL_NO_PROGRESS": "1", "JAX_PLATFORMS": "cpu"}
    env["JAX_NUM_CPU_DEVICES"] = str(devices)
    env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] = "gloo"
    env.pop("XLA_FLAGS", None)
    return env


def _cmd(workdir, mesh, *flags):
    return [
        sys.executable,
        "-m",
        "launch.main",
        f"--config={TINY}",
        f"--workdir={workdir}",
        f"--config.mesh_shape={mesh}",
        *flags,
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(workdir, timeout=420):
    port = _free_port()
    procs = []
    for pid in range(2):
        flags = [
            "--multihost",
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={pid}",
        ]
        procs.append(
            subprocess.Popen(
                _cmd(workdir, "(2,2,2)", *flags),
                cwd=ROOT,
                env=_env(4),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:  # only the processes this test started
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs


def _run_one(workdir, mesh, devices, *flags):
    out = subprocess.run(
        _cmd(workdir, mesh, *flags),
        cwd=ROOT,
        env=_env(devices),
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((workdir / "result.json").read_text())


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    w = tmp_path_factory.mktemp("mp") / "run"
    outs = _run_two_processes(w)
    return w, json.loads((w / "result.json").read_text()), outs


def test_two_processes_train_and_checkpoint_restores_in_one(two_process_run):
    w, res, outs = two_process_run
    assert "mesh (2, 2, 2)" in outs[0] and "mesh (2, 2, 2)" not in outs[1]  # one report
    assert sorted(os.listdir(w / "ckpt")) == ["1", "2"]
    # One process, one device, same workdir: restores the finished run (resharded) and
    # re-evaluates the restored parameters. The mesh is part of the config, so the resume with
    # another mesh must be allowed explicitly (and is recorded in the workdir).
    again = _run_one(w, "(-1,1,1)", 1, "--allow_config_change")
    assert (w / "config_changes.jsonl").exists()
    for k in KEYS:
        assert again[k] == pytest.approx(res[k], rel=1e-5), k


@pytest.mark.slow
@pytest.mark.parametrize("mesh, devices", [("(2,2,2)", 8), ("(-1,1,1)", 1)])
def test_two_processes_equal_one_process(two_process_run, tmp_path, mesh, devices):
    _, res, _ = two_process_run
    one = _run_one(tmp_path / "one", mesh, devices)
    for k in KEYS:
        assert one[k] == pytest.approx(res[k], rel=1e-5), k
