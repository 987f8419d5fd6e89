"""Test-wide settings: CPU only, fp32 matmuls, quiet progress bars, cheap XLA compiles.

Compilation dominates the suite (hundreds of small jitted programs, each compiled once, mostly
for a step or two of a tiny model), so the suite asks XLA's CPU backend for a low LLVM
optimisation level without its expensive passes: a configs/sft.py:tiny run in one process took
~30 s CPU at the default, ~14.5 s at level 1 and ~10-14 s at level 0 (the compiled code runs
slower, which a tiny model does not notice). Level 0 is not used: it changes float results in the
last bit (e.g. the truncated-normal initialiser's draws), which
tests/models/test_transformer.py::test_fused_params_are_the_unfused_draws_and_grads_match checks
bit for bit against draws recorded at the default level; level 1 reproduces them. Subprocesses
started by tests inherit the setting through XLA_FLAGS. A flag already in XLA_FLAGS wins.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("LMRL_NO_PROGRESS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_CHEAP_COMPILES = {
    "--xla_backend_optimization_level": "1",
    "--xla_llvm_disable_expensive_passes": "true",
}
_flags = os.environ.get("XLA_FLAGS", "")
_extra = [f"{k}={v}" for k, v in _CHEAP_COMPILES.items() if k not in _flags]
os.environ["XLA_FLAGS"] = " ".join([_flags, *_extra]).strip()

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
