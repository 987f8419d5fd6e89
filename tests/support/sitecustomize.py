"""Startup hook for the suite's subprocesses (CLI runs, check scripts, notebook kernels):
`child_env()` puts tests/support/ on their PYTHONPATH, so Python imports this module at startup.

It applies tests/support/suite_speed.py's two savings, as tests/conftest.py does in the pytest
workers: a larger youngest-generation GC threshold now, and, once JAX's MLIR lowering module is
imported (an import hook: nothing is imported here, so a child that sets its JAX platform or
device count before importing jax still can), lighter MLIR contexts. Neither changes a result.
"""

import importlib.abc
import importlib.util
import sys

import suite_speed

_TARGET = "jax._src.interpreters.mlir"


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            suite_speed.load_only_jax_dialects()

        spec.loader.exec_module = exec_then_patch
        return spec


suite_speed.relax_gc(freeze=False)
sys.meta_path.insert(0, _PatchAfterImport())
