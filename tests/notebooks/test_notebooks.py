"""Every notebook in notebooks/ runs top to bottom headless (TINY mode), and its .ipynb matches its
jupytext .py; plus the public task `register` that the bring-your-own-task notebook relies on.

Notebooks run in a fresh IPython kernel (nbclient) started with this interpreter, in the
notebooks/ directory, with `LMRL_NOTEBOOK_TINY=1` so that `make test` stays within its budget.
Each must leave at least one inline image (its curves or table plot) and no error output.

Compilation dominates a TINY run (tens of small jitted programs per notebook), so the kernels use
XLA's lowest CPU optimisation level and a persistent JAX compilation cache in
`.pytest_cache/jax-notebooks` (kept between runs, removed by `make clean`); an explicit
JAX_COMPILATION_CACHE_DIR wins.
"""

import glob
import json
import os
import sys

import jupytext
import nbformat
import pytest
from child_env import SUPPORT
from nbclient import NotebookClient

from data import tasks
from data.tasks.arithmetic import Arithmetic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NB_DIR = os.path.join(ROOT, "notebooks")
SOURCES = sorted(glob.glob(os.path.join(NB_DIR, "*.py")))
KERNEL = "lmrl-test"


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_four_notebooks():
    names = [os.path.basename(p) for p in SOURCES]
    assert len(names) == 4, names


@pytest.mark.parametrize("src", SOURCES, ids=os.path.basename)
def test_ipynb_is_paired_with_py(src):
    """The .ipynb holds the same cells as the reviewed .py (run `jupytext --sync` after edits)."""
    ipynb = src[:-3] + ".ipynb"
    assert os.path.exists(ipynb), f"missing {ipynb}: run jupytext --sync {src}"
    assert _cells(nbformat.read(ipynb, as_version=4)) == _cells(jupytext.read(src)), (
        f"{ipynb} and {src} differ: run jupytext --sync {src}"
    )


def test_first_code_cell_installs_only_when_missing():
    for src in SOURCES:
        first = next(c for c in jupytext.read(src).cells if c.cell_type == "code").source
        assert 'importlib.metadata.version("lmrl")' in first, src
        assert "PackageNotFoundError" in first and "pip" in first, src
        assert "sys.path.insert(0, ROOT)" in first, src


@pytest.mark.parametrize("installed", [True, False])
def test_install_cell_runs_pip_only_when_missing(installed, monkeypatch, capsys):
    """Executes each notebook's first code cell with pip stubbed out: it installs the checkout
    it finds above the notebook's directory only when `lmrl` is not installed."""
    import importlib.metadata
    import subprocess

    def version(name):
        if installed:
            return "0.1.0"
        raise importlib.metadata.PackageNotFoundError(name)

    calls = []
    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(subprocess, "check_call", lambda argv: calls.append(argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(NB_DIR)
    for src in SOURCES:
        calls.clear()
        first = next(c for c in jupytext.read(src).cells if c.cell_type == "code").source
        namespace = {}
        exec(compile(first, src, "exec"), namespace)
        assert namespace["ROOT"] == ROOT and ROOT in sys.path
        if installed:
            assert calls == [], src
        else:
            assert calls == [[sys.executable, "-m", "pip", "install", "-q", "-e", ROOT]], src


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A kernelspec that runs this interpreter, so the kernel sees this venv and checkout."""
    d = tmp_path_factory.mktemp("jupyter")
    spec = d / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    return str(d)


# Every notebook runs in `make test` (issue 20): together 15-25 s each on 2 cores at tiny size.
@pytest.mark.parametrize("src", SOURCES, ids=os.path.basename)
def test_notebook_runs_tiny(src, kernel_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", kernel_dir)
    monkeypatch.setenv("LMRL_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("LMRL_NO_PROGRESS", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' workdirs land here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", SUPPORT)  # its sitecustomize.py, as for every test child
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        ROOT, ".pytest_cache", "jax-notebooks"
    )
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", cache)
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    xla = os.environ.get("XLA_FLAGS", "")
    if "--xla_backend_optimization_level" not in xla:  # tests/conftest.py normally sets it
        monkeypatch.setenv("XLA_FLAGS", f"{xla} --xla_backend_optimization_level=0".strip())
    nb = jupytext.read(src)
    client = NotebookClient(
        nb, timeout=600, kernel_name=KERNEL, resources={"metadata": {"path": NB_DIR}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{src} displayed no image"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "tiny smoke run" in text, "the notebook did not see LMRL_NOTEBOOK_TINY"


# --- data.tasks.register (used by notebooks/02_bring_your_own_task) ----------------------------


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(tasks, "_REGISTRY", dict(tasks._REGISTRY))


def test_register_adds_a_task(registry):
    tasks.register("arith3", lambda **kw: Arithmetic(num_ops=3, **kw))
    assert "arith3" in tasks.names()
    t = tasks.get("arith3", max_operand=5)
    assert t.num_ops == 3 and t.max_operand == 5


def test_register_refuses_duplicates_unless_overwrite(registry):
    with pytest.raises(ValueError, match="already registered"):
        tasks.register("sudoku4", Arithmetic)
    tasks.register("sudoku4", Arithmetic, overwrite=True)
    assert isinstance(tasks.get("sudoku4"), Arithmetic)


@pytest.mark.parametrize("name", ["", "Bad", "has space", "dash-ed"])
def test_register_rejects_bad_names(registry, name):
    with pytest.raises(ValueError, match="lower_snake"):
        tasks.register(name, Arithmetic)


def test_register_rejects_non_callable(registry):
    with pytest.raises(TypeError):
        tasks.register("x", 3)
