"""Runs test_transformer.check_fused_params_are_the_unfused_draws at XLA's default optimisation
level, in this fresh process (started by test_transformer.py without tests/conftest.py's
optimisation-level flag): the recorded pre-fusion draws it compares bit for bit were made at that
level.
Prints "ok" when every check passed; an assertion error exits non-zero."""

import os
import sys

import jax
import numpy as np

jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
HERE = os.path.dirname(os.path.abspath(__file__))
# test_transformer, and tests/support/ (child_env) as pytest's pythonpath setting
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "support")]

import test_transformer  # noqa: E402

test_transformer.check_fused_params_are_the_unfused_draws(dict(np.load(test_transformer._REF)))
print("ok")
