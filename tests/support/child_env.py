"""The suite's cheap-compile XLA flags and the environment for a JAX subprocess a test starts
(importable from tests/conftest.py and every test module: pyproject.toml puts tests/support/ on
sys.path).

`child_env`: the child runs on CPU without progress bars, imports this checkout, and keeps the
cheap-compile flags (its runs are mostly compilation), but not a forced host device count: it gets
`devices` CPU devices through JAX_NUM_CPU_DEVICES, or (devices=None) sets its own count. This
directory is on its PYTHONPATH too, so Python runs tests/support/sitecustomize.py at its startup
(the suite's GC threshold and lighter MLIR contexts, as in the pytest workers).
"""

import json
import os
import subprocess
import sys

# tests/conftest.py sets these for the suite (see its docstring); tests/models/test_transformer.py
# strips them for its default-level check.
CHEAP_COMPILES = {
    "--xla_backend_optimization_level": "0",
    "--xla_llvm_disable_expensive_passes": "true",
    # XLA:CPU's legacy elemental emitter instead of the MLIR fusion emitters: half the backend
    # compile time (83.7 -> 42.0 s over the 662 programs of tests/rl/test_spg_controls.py,
    # tests/fed/test_fast_paths.py and tests/models/test_transformer.py, cold cache, idle CPU).
    "--xla_cpu_use_fusion_emitters": "false",
    # One LLVM module per program instead of XLA splitting it for parallel codegen: the split
    # (llvm::SplitModule, CloneModule, printing each part) was ~18% of a compile's CPU time in a
    # perf profile of the tiny TreePiece update, and with two pytest workers on two cores the
    # parallel parts gain no wall time. Measured 94.5 -> 79.5 CPU-s (user+sys, mean of 2 A/B pairs)
    # on tests/rl/test_spg_controls.py, tests/fed/test_fast_paths.py and the treepiece pulse run;
    # the whole cold suite's CPU time (~750-780 s) did not move outside its run-to-run noise.
    "--xla_cpu_parallel_codegen_split_count": "1",
}

SUPPORT = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(SUPPORT))


def child_env(devices: int | None = None, **extra: str) -> dict[str, str]:
    path = os.pathsep.join([ROOT, SUPPORT])
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "LMRL_NO_PROGRESS": "1", "PYTHONPATH": path}
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if "device_count" not in f)
    env.pop("JAX_NUM_CPU_DEVICES", None)
    if devices is not None:
        env["JAX_NUM_CPU_DEVICES"] = str(devices)
    return {**env, **extra}


def run_check(script: str, *args: str, timeout: float) -> dict:
    """Runs a check script (`python SCRIPT ARGS` from the repository root, in `child_env()`: the
    script sets its own device count) and returns the JSON object on the last stdout line that
    starts with "{". A non-zero exit fails with the end of the script's stderr."""
    out = subprocess.run(
        [sys.executable, script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
