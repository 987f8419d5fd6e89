"""Test-wide settings: CPU only, fp32 matmuls, quiet progress bars, cheap XLA compiles.

Compilation dominates the suite (hundreds of small jitted programs, each compiled once, mostly for
a step or two of a tiny model), so the suite asks XLA's CPU backend for its lowest LLVM
optimisation level without its expensive passes, and its older fusion emitter (half the compile
time of the MLIR one): a configs/sft.py:tiny run in one process took ~30 s CPU at the default
level, ~14.5 s at level 1 and ~10-14 s at level 0, and the fed vmap tests
(tests/fed/test_fast_paths.py) took half their level-1 time at level 0. The compiled code runs
slower, which a tiny model does not notice. Level 0 changes float results in the last bit (e.g. the
truncated-normal initialiser's draws): the one test that compares bits with numbers recorded at the
default level runs them in a subprocess without the level flag (tests/models/default_level_check.py;
the other flags keep those bits). Subprocesses started by tests inherit the setting through
XLA_FLAGS. A flag already in XLA_FLAGS wins. tests/support/suite_speed.py's in-process savings
(lighter MLIR contexts, a relaxed garbage collector) are applied here and in test subprocesses.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("LMRL_NO_PROGRESS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from child_env import CHEAP_COMPILES  # noqa: E402  (tests/support/ is on sys.path: pyproject.toml)
from suite_speed import load_only_jax_dialects, relax_gc  # noqa: E402

_flags = os.environ.get("XLA_FLAGS", "")
_extra = [f"{k}={v}" for k, v in CHEAP_COMPILES.items() if k not in _flags]
os.environ["XLA_FLAGS"] = " ".join([_flags, *_extra]).strip()

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
load_only_jax_dialects()  # fewer MLIR dialects per lowering (tests/support/suite_speed.py)


# The heaviest test files, longest first (seconds of one cold run, 2026-12-03). `make test` runs
# `--dist loadfile --no-loadscope-reorder`: xdist hands whole files, in collection order, to
# whichever worker is free, so starting the long files first lets the run end on short ones
# (longest-processing-time-first scheduling). xdist's own order (files with the most tests first)
# left the 38 s tests/launch/test_main.py to the end of a cold run and the other worker idle for
# its last 16 s. A file missing from this list keeps its collection order after the listed ones.
_LONGEST_FIRST = [
    "tests/notebooks/test_notebooks.py",  # 100 s
    "tests/configs/test_configs.py",  # 71
    "tests/launch/test_main.py",  # 38
    "tests/models/test_transformer.py",  # 38
    "tests/fed/test_fast_paths.py",  # 34
    "tests/launch/test_multiprocess.py",  # 27
    "tests/launch/test_faults.py",  # 26
    "tests/rl/test_spg_hf_base.py",  # 25
    "tests/rl/test_likelihood.py",  # 24
    "tests/rl/test_jepo.py",  # 24
    "tests/rl/test_spg.py",  # 22
    "tests/rl/test_spg_controls.py",  # 20
    "tests/rl/test_curriculum.py",  # 18
    "tests/rl/distributed/test_weight_sync.py",  # 15
]


def pytest_collection_finish(session):
    relax_gc()  # the imported modules' objects leave the collector (tests/support/suite_speed.py)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable
