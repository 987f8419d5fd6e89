"""Runs `:tiny` configs one after another in this process, on its devices, with a given mesh.

Usage: python tests/launch/mesh_check.py OUT_DIR MESH NAME [NAME ...]
(MESH like "(2,2,2)"; the device count comes from JAX_NUM_CPU_DEVICES). Each config runs through
`launch.main.run_experiment` in `OUT_DIR/NAME`; one JSON line maps every name to its result and
the last logged value of every metric in its metrics.jsonl, or to {"error": ...} when it raised
(the other configs still run). One process for all configs: imports and the compilation cache
are shared, which keeps the mesh test affordable.
"""

import ast
import importlib
import json
import os
import sys
import time
import traceback


def last_metrics(workdir: str) -> dict:
    """The last logged value of every metric in `workdir/metrics.jsonl`."""
    out = {}
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                out.update({k: v for k, v in json.loads(line).items() if k != "step"})
    return out


def main(out_dir: str, mesh: str, names: list[str]) -> dict:
    from launch.main import run_experiment

    results = {}
    for name in names:
        config = importlib.import_module(f"configs.{name}").get_config("tiny")
        config.mesh_shape = tuple(ast.literal_eval(mesh))
        t0 = time.perf_counter()
        try:
            workdir = os.path.join(out_dir, name)
            res = run_experiment(config, workdir)
            results[name] = {
                "result": res,
                "metrics": last_metrics(workdir),
                "seconds": time.perf_counter() - t0,
            }
        except Exception as e:  # reported per config, the others still run
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
        print(f"mesh_check {name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    return results


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3:]), default=str))
