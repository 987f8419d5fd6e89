"""Two in-process savings for the suite (tests/conftest.py applies both; they change no result).

`load_only_jax_dialects`: every lowering (each jitted program, each first call of an eager op)
builds a fresh MLIR context, and jax 0.10's `make_ir_context` loads every dialect in its upstream
registry into it (LLVM, linalg, NVVM, vhlo, shape, ...: ~7.5 ms of CPU per context here, 1.5 ms
with `func` alone), although a lowering for XLA only creates `func` ops besides the dialects it
registers itself (stablehlo, chlo, mhlo, sdy). `tests/rl/test_spg_controls.py` plus
`tests/rl/test_jepo.py` build 792 contexts: ~5 s of their ~50 s. The override keeps the registry,
so C++ passes still load what they declare; a lowering that does create an op of an unloaded
dialect fails loudly ("the operation was not registered"), never silently. It is applied only
when this jax has the `JaxIrContext` it overrides.

`relax_gc`: JAX tracing allocates many short-lived objects, and with Python's default thresholds
(700, 10, 10) the same two files spent 2.7 s in 1,566 collections. After collection the imported
modules' objects are frozen out of the collector (`gc.freeze`) and the youngest generation is
collected once 20,000 (not 700) new container objects are alive: 0.7-0.9 s in ~500 collections.
Subprocesses get the threshold only (tests/support/sitecustomize.py).
"""

import gc


def load_only_jax_dialects() -> None:
    from jax._src.interpreters import mlir

    ctx = getattr(mlir, "JaxIrContext", None)
    if ctx is None:
        return

    def load_func_dialect(self):
        self.dialects["func"]  # noqa: B018  (indexing loads the dialect)

    ctx.load_all_available_dialects = load_func_dialect


def relax_gc(young: int = 20_000, freeze: bool = True) -> None:
    if freeze:
        gc.collect()
        gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(young, g1, g2)
