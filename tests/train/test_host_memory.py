"""train/host_memory.py: with "retain" a freed large buffer is reused without page faults (the
~1 GB step buffer of bench/mfu.py faulted in afresh on every step without it); the opt-out and a
bad LMRL_HOST_MALLOC value. glibc settings are process-wide, so the allocator checks run in child
processes and this worker's allocator is never changed."""

import json
import os
import subprocess
import sys

import pytest
from child_env import ROOT, child_env

from models.errors import UserError
from train import host_memory

_CHILD = r"""
import ctypes, json, resource
from train import host_memory

mode = host_memory.retain_freed_memory()
libc = ctypes.CDLL(None)
libc.aligned_alloc.restype = ctypes.c_void_p  # as XLA:CPU allocates its buffers (aligned)
libc.free.argtypes = [ctypes.c_void_p]
n = 256 << 20  # far above glibc's mmap threshold
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.aligned_alloc(64, n)
    ctypes.memset(p, 1, n)  # touches every page
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"mode": mode, "state": host_memory.state(), "faults": faults}))
"""
_PAGES = (256 << 20) // os.sysconf("SC_PAGE_SIZE")


def _child(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD],
        cwd=ROOT,
        env=child_env(LMRL_HOST_MALLOC=mode),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not host_memory._glibc(), reason="the settings are glibc's")
def test_retain_reuses_a_freed_buffer_without_faults_and_system_does_not():
    retain, system = _child("retain"), _child("system")
    assert retain["mode"] == retain["state"] == "retain"
    assert system["mode"] == system["state"] == "system"
    # The first allocation faults its pages in either way, and under "retain" the second one
    # sometimes does too (in ~1 of 4 runs: a small allocation split the first freed block, so the
    # next large one came from fresh heap); from the third on, "retain" reuses the pages.
    assert retain["faults"][0] > _PAGES // 2 and system["faults"][0] > _PAGES // 2
    assert max(retain["faults"][2:]) < _PAGES // 100, retain
    assert min(system["faults"][1:]) > _PAGES // 2, system


def test_system_is_a_no_op_and_a_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setattr(host_memory, "_applied", None)
    monkeypatch.setenv("LMRL_HOST_MALLOC", "system")
    assert host_memory.retain_freed_memory() == "system" == host_memory.state()
    monkeypatch.setattr(host_memory, "_applied", None)
    monkeypatch.setenv("LMRL_HOST_MALLOC", "tcmalloc")
    with pytest.raises(UserError, match="LMRL_HOST_MALLOC='tcmalloc'.*'retain'.*'system'"):
        host_memory.retain_freed_memory()
