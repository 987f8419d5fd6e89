"""Every config: variant parsing, locked keys, and a 2-step pulse run of its `tiny` variant."""

import glob
import importlib
import os

import pytest

from configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if not os.path.basename(p).startswith(("_", "common"))
)


def test_parse_variant():
    d = {"task": "a", "n": 1, "lr": 0.1, "tiny": False}
    assert common.parse_variant("task=b,n=3,lr=0.5,tiny", d) == {
        "task": "b",
        "n": 3,
        "lr": 0.5,
        "tiny": True,
    }
    with pytest.raises(ValueError, match="'tsk'"):
        common.parse_variant("tsk=b", d)
    with pytest.raises(ValueError, match="'n'"):
        common.parse_variant("n=three", d)
    with pytest.raises(ValueError, match="not one of"):
        common.parse_variant("task=z", d, {"task": ("a", "b")})


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_and_is_lockable(name):
    from launch.experiments import get_runner

    mod = importlib.import_module(f"configs.{name}")
    for arg in (None, "tiny"):
        c = mod.get_config(arg)
        assert c.experiment and isinstance(c.seed, int)
        assert callable(get_runner(c.experiment))  # also for configs whose pulse run is slow
        c.lock()
        with pytest.raises((AttributeError, KeyError)):
            c.no_such_key_xyz = 1
    assert mod.__doc__ and len(mod.__doc__) > 80, "config docstring must say time and result"


# pcl's tiny run compiles its five curricula' samplers and value model (~2 min on 2 cores):
# it runs in `make test-all`; its harness is covered by tests/rl/test_run_pcl.py.
# spg's tiny run is the costliest here and duplicates the fast suite's
# tests/rl/test_run_spg.py::test_tiny_run_and_resume[tiny] (same config, same runner, plus a
# resume); the launch plumbing this test adds (get_runner, prepare_workdir) is the same for every
# config and is exercised by the other rows.
# Three more tiny runs are already made, through the same `get_runner(...)(config, workdir)`, by
# the notebooks that tests/notebooks/test_notebooks.py::test_notebook_runs_tiny executes in make
# test: fed_oov (38 s CPU here) by 03_federated_oov (the same `:tiny` config); grpo (30 s) by
# 02_bring_your_own_task (`:tiny` with another task: the same runner, rl/run_ar.py, and
# objective; jepo's row below also runs rl/run_ar.py); read (38 s) by 04_read_vs_lora
# (`:tiny,baselines=lora+full`: the same runner and READ method; the `head` baseline's method is
# covered by tests/models/test_peft.py).
_DUPLICATED = ("pcl", "spg", "fed_oov", "grpo", "read")
_PULSE = [pytest.param(n, marks=pytest.mark.slow) if n in _DUPLICATED else n for n in CONFIGS]


@pytest.mark.parametrize("name", _PULSE)
def test_tiny_pulse_run(name, tmp_path):
    from launch.experiments import get_runner
    from launch.workdir import prepare_workdir

    c = importlib.import_module(f"configs.{name}").get_config("tiny")
    c.lock()
    workdir = str(tmp_path / name)
    prepare_workdir(c, workdir)
    result = get_runner(c.experiment)(c, workdir)
    assert isinstance(result, dict) and result
