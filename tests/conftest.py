"""Test-wide settings: CPU only, fp32 matmuls, quiet progress bars."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("LMRL_NO_PROGRESS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
