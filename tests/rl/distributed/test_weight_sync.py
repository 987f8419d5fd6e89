"""The weight channel on 8 fake CPU devices (trainer mesh on 0-3, generator mesh on 4-7):
bitwise equal after mesh->mesh for equal and different specs, versions monotone, bf16 error
bounded (run in a subprocess: the device count is fixed at JAX start-up)."""

import json
import os
import subprocess
import sys

import pytest
from child_env import child_env, run_check

from rl.distributed.weight_sync import plan_buckets

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))


def _check(mode: str) -> dict:
    return run_check(os.path.join(HERE, "dist_check.py"), mode, timeout=600)


def test_plan_buckets():
    assert plan_buckets([4, 4, 4, 10, 1], 8) == [[0, 1], [2], [3], [4]]
    assert plan_buckets([1, 1], 100) == [[0, 1]]


@pytest.fixture(scope="module")
def ws():
    return _check("weight_sync")


def test_sync_is_bitwise_for_equal_and_different_specs(ws):
    for name in ("equal", "different", "dp"):
        r = ws[name]
        assert r["bitwise"] and r["dtype"] and r["on_generator"], (name, r)
        assert r["buckets"] > 1  # 4 KiB buckets split the tiny model
    assert ws["equal"]["specs_differ"] == 0 and ws["equal"]["two_hop"] == 0
    assert ws["different"]["specs_differ"] > 0
    for name in ("different", "dp"):  # every leaf whose layout changes goes through hop 1
        assert ws[name]["two_hop"] == ws[name]["layouts_differ"] > 0


def test_colocated_sync_does_not_alias_the_trainer(ws):
    assert ws["colocated_survives_donation"]


def test_bf16_cast_error_is_bounded(ws):
    assert ws["bf16"]["dtype"] == ["bfloat16"]
    assert ws["bf16"]["max_rel_err"] <= 2.0**-8  # bf16 unit roundoff (8-bit significand)
    assert ws["bf16"]["bytes_ratio"] == 0.5


def test_versions_are_monotone_and_double_buffered(ws):
    assert ws["versions"] == [0, 1, 2] and ws["refused_old_version"]
    assert ws["kept"] == [1, 2] and ws["exact_1"] == 1 and ws["newest"] == 2


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_two_hop_sync_on_localhost():
    """Process 0 (trainer devices) -> process 1 (generator devices, another layout) over
    127.0.0.1 with gloo: bitwise equal shards on process 1, checksums agree across processes."""
    port = _free_port()
    env = child_env()  # mp_sync.py sets its own device count
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, "mp_sync.py"), str(i), str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err[-3000:]
            outs.append(json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1]))
    finally:
        for p in procs:  # only our own children, by pid
            if p.poll() is None:
                p.kill()
    gen = outs[1]
    assert gen["local_shards"] == 4 and gen["bitwise"] and gen["two_hop"] == 1
    assert outs[0]["local_shards"] == 0  # the trainer process holds none of the destination
    assert outs[0]["checksums"] == gen["checksums"] and len(gen["checksums"]) == 2
    for a, b in gen["checksums"]:
        assert a == pytest.approx(b, rel=1e-6) and a > 0
