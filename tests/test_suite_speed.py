"""The suite's in-process savings (tests/support/suite_speed.py) are active, in the workers and in
the subprocesses tests start, and lower programs to the same text as JAX's own contexts."""

import gc
import subprocess
import sys

import jax
import jax.numpy as jnp
from child_env import ROOT, child_env
from jax._src.interpreters import mlir


def _lowered_text():
    def f(x, y):  # a fresh function each call: no lowering cache hit
        return jnp.tanh(x @ y).sum(0), jax.nn.softmax(y, axis=-1)

    x = jnp.ones((4, 3))
    return jax.jit(f).lower(x, x.T).as_text()


def test_light_contexts_lower_the_same_program_as_all_dialects(monkeypatch):
    assert mlir.JaxIrContext.load_all_available_dialects.__name__ == "load_func_dialect"
    light = _lowered_text()
    monkeypatch.delattr(mlir.JaxIrContext, "load_all_available_dialects")  # back to ir.Context's
    assert mlir.JaxIrContext.load_all_available_dialects.__name__ == "load_all_available_dialects"
    assert _lowered_text() == light


def test_workers_and_children_get_the_gc_threshold_and_light_contexts():
    assert gc.get_threshold()[0] == 20_000
    code = (
        "import gc, jax; from jax._src.interpreters import mlir; "
        "print(gc.get_threshold()[0], mlir.JaxIrContext.load_all_available_dialects.__name__, "
        "jax.jit(lambda x: x + 1)(1))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["20000", "load_func_dialect", "2"]
