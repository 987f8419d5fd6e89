"""Same model and batch give the same loss and gradients on (8,1,1), (2,4,1), (2,2,2) meshes."""

import json
import os
import subprocess
import sys

import pytest
from child_env import child_env

from models.sharding import LOGICAL_RULES, logical_to_spec


def test_logical_table_maps_to_mesh_axes_only():
    for name, rule in LOGICAL_RULES.items():
        axes = (rule,) if isinstance(rule, str) else tuple(rule or ())
        assert set(axes) <= {"data", "fsdp", "tensor"}, name
    assert logical_to_spec(("embed", "mlp")) == __import__("jax").sharding.PartitionSpec(
        "fsdp", "tensor"
    )
    with pytest.raises(KeyError, match="no sharding rule"):
        logical_to_spec(("nonsense",))


def test_meshes_agree_with_single_device():
    here = os.path.dirname(__file__)
    root = os.path.dirname(os.path.dirname(here))
    out = subprocess.run(
        [sys.executable, os.path.join(here, "sharding_check.py")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),  # sharding_check.py sets its own device count
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 3
    for r in rows:
        assert r["loss_diff"] < 1e-5, r
        assert r["grad_diff"] < 1e-5, r
    specs = {tuple(r["mesh"]): r["w_gate_spec"] for r in rows}
    assert "tensor" in specs[(2, 2, 2)] and "fsdp" in specs[(2, 4, 1)]
