"""The two-process LlamaRL loop on 127.0.0.1 (rl/distributed/multiprocess.py): one program,
process 0 the trainer on its 2 CPU devices (fsdp), process 1 the generator on its 2 (tensor
parallel); rollouts over the localhost socket, weights back with the cross-process two-hop sync.
A killed generator process is reported by the trainer as a dead role with its last heartbeat,
never a hang. Free ports, hard timeouts, only our own PIDs are killed."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from child_env import child_env

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
pytestmark = pytest.mark.slow


def _free_port() -> int:
    # The program uses port .. port+3 (coordinator, two transfer sockets, trajectories).
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 3 < 65536 and all(_free(port + i) for i in range(1, 4)):
            return port
    raise RuntimeError("no 4 consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _launch(workdir, *flags):
    port = _free_port()
    env = child_env()  # each process sets its own device count
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rl.distributed.multiprocess",
                "--config=configs/llamarl.py:tiny,mode=async",
                f"--workdir={workdir}",
                f"--process_id={i}",
                f"--port={port}",
                *flags,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def _reap(procs):
    for p in procs:  # only our own children, by pid
        if p.poll() is None:
            p.kill()
            p.wait()


def _result(out: str) -> dict:
    return json.loads([ln for ln in out.splitlines() if ln.startswith("LLAMARL_MP ")][-1][11:])


def test_two_process_loop_trains_with_cross_process_two_hop_sync(tmp_path):
    procs = _launch(str(tmp_path / "run"), "--config.rl.steps=4")
    try:
        outs = [p.communicate(timeout=400) for p in procs]
    finally:
        _reap(procs)
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, (out[-2000:], err[-3000:])
    tr, gen = _result(outs[0][0]), _result(outs[1][0])
    assert tr["role"] == "trainer" and gen["role"] == "generator"
    assert tr["steps"] == 4 and tr["seq"] == [0.0, 1.0, 2.0, 3.0]
    assert tr["lag"] == [0.0, 1.0, 1.0, 1.0]  # k = 1: rollout b sampled with version b - 1
    assert gen["sent"] == 4 and gen["versions"] == 4  # versions 0..3 synced, none skipped
    # fsdp on the trainer, tensor parallel on the generator: layouts differ -> hop 1 is used.
    assert len(tr["two_hop_leaves"]) == 4 and min(tr["two_hop_leaves"]) > 0
    assert tr["is_mean"][0] == pytest.approx(1.0, abs=1e-5)  # step 0 is on-policy
    assert tr["heartbeats"] > 0
    rows = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["llamarl/seq"] for r in rows] == [0.0, 1.0, 2.0, 3.0]


def test_killed_generator_process_is_reported_not_hung(tmp_path):
    """The generator process is SIGKILLed mid-run (after the trainer's second step, while it
    sleeps in its latency-injected rollout): the trainer exits non-zero within seconds with
    PeerDead naming 'generator (process 1)' and its last heartbeat."""
    wd = tmp_path / "run"
    procs = _launch(
        str(wd),
        "--config.rl.steps=50",
        "--config.llamarl.inject_latency_per_token_s=0.05",
        "--config.llamarl.heartbeat_s=20",
    )
    try:
        deadline = time.monotonic() + 400
        metrics = wd / "metrics.jsonl"
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            assert time.monotonic() < deadline, "the run never reached step 2"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.2)
        killed_at = time.monotonic()
        os.kill(procs[1].pid, signal.SIGKILL)
        out, err = procs[0].communicate(timeout=60)
        took = time.monotonic() - killed_at
    finally:
        _reap(procs)
    assert procs[0].returncode != 0
    assert "PeerDead" in err and "generator (process 1) is dead" in err, err[-3000:]
    assert "last heartbeat" in err
    assert took < 20, took
