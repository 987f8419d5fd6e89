"""SLURM launcher: fill `launch/slurm.sbatch` for a GPU cluster and submit it with `sbatch`.

    python -m launch.slurm --nodes=2 --gpus_per_node=8 --config=configs/spg.py:llada8b \\
        --workdir=/shared/runs/spg8b --partition=gpu --dry_run
    python -m launch.slurm ... --config.rl.steps=100     # --config.* overrides are passed through

The filled script sets the `#SBATCH` resources (one task per GPU, as JAX's SLURM auto-detection
expects; see the template's header) and pins CONFIG, WORKDIR, PYTHON and EXTRA_ARGS. `--dry_run`
prints the script and the `sbatch` command and runs nothing; otherwise the script is piped to
`sbatch` (which must be on PATH) and, with `--out`, also written to a file.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slurm.sbatch")
_TIME = re.compile(r"^(\d+-)?\d+(:\d{2}){0,2}$")


def _set_directive(lines: list[str], key: str, value: str) -> None:
    """Replaces `#SBATCH --key=...` in place, or adds it after the last directive."""
    line = f"#SBATCH --{key}={value}"
    idx = [i for i, ln in enumerate(lines) if ln.startswith("#SBATCH ")]
    for i in idx:
        if lines[i].split("=", 1)[0] == f"#SBATCH --{key}":
            lines[i] = line
            return
    lines.insert(idx[-1] + 1 if idx else 1, line)


def _set_variable(lines: list[str], name: str, value: str) -> None:
    """Replaces the template's `NAME=...` default with the quoted `value`."""
    for i, ln in enumerate(lines):
        if ln.startswith(f"{name}="):
            lines[i] = f"{name}={shlex.quote(value)}"
            return
    raise ValueError(f"template {TEMPLATE} has no {name}= line")


def _check_directive_value(key: str, value: str) -> None:
    # A directive is read by sbatch, not by a shell: no quoting exists, so refuse what would break.
    if not value or any(c.isspace() for c in value) or "#" in value:
        raise ValueError(f"--{key} must be one word without spaces or '#', got {value!r}")


def fill(
    *,
    nodes: int,
    gpus_per_node: int,
    config: str,
    workdir: str,
    python: str = ".venv/bin/python",
    overrides: Sequence[str] = (),
    job_name: str = "lmrl",
    time: str = "04:00:00",
    cpus_per_task: int = 8,
    partition: str = "",
    account: str = "",
    template: str = TEMPLATE,
) -> str:
    """The batch script for one run.

    Args:
      nodes, gpus_per_node: the allocation; one task (JAX process) per GPU.
      config: `--config` for launch.main (`configs/X.py[:variant]`).
      workdir: run directory on the shared filesystem (relative paths are from the submit dir).
      python: interpreter with the package and a CUDA build of JAX.
      overrides: extra launch.main flags (`--config.a.b=v`).
      job_name, time, cpus_per_task, partition, account: the usual `#SBATCH` fields ("" = unset).
      template: the script to fill.

    Returns:
      The filled script text.

    Raises:
      ValueError: a non-positive count, a malformed time, or a directive value with spaces.
    """
    if nodes < 1 or gpus_per_node < 1 or cpus_per_task < 1:
        raise ValueError("--nodes, --gpus_per_node and --cpus_per_task must be >= 1")
    if not _TIME.match(time):
        raise ValueError(f"--time must look like [D-]HH:MM:SS, got {time!r}")
    with open(template) as f:
        lines = f.read().splitlines()
    directives = {
        "job-name": job_name,
        "nodes": str(nodes),
        "gpus-per-node": str(gpus_per_node),
        "ntasks-per-node": str(gpus_per_node),
        "cpus-per-task": str(cpus_per_task),
        "time": time,
    }
    if partition:
        directives["partition"] = partition
    if account:
        directives["account"] = account
    for key, value in directives.items():
        _check_directive_value(key, value)
        _set_directive(lines, key, value)
    _set_variable(lines, "CONFIG", config)
    _set_variable(lines, "WORKDIR", workdir)
    _set_variable(lines, "PYTHON", python)
    _set_variable(lines, "EXTRA_ARGS", shlex.join(overrides))
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m launch.slurm",
        description="Fill launch/slurm.sbatch and submit it (one JAX process per GPU).",
        epilog="Unrecognised --config.* flags are passed through to launch.main.",
    )
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus_per_node", type=int, default=8)
    p.add_argument("--config", required=True, help="configs/X.py[:variant]")
    p.add_argument("--workdir", required=True, help="run directory on the shared filesystem")
    p.add_argument("--python", default=".venv/bin/python", help="interpreter on the nodes")
    p.add_argument("--job_name", default="lmrl")
    p.add_argument("--time", default="04:00:00", help="wall-clock limit, [D-]HH:MM:SS")
    p.add_argument("--cpus_per_task", type=int, default=8)
    p.add_argument("--partition", default="")
    p.add_argument("--account", default="")
    p.add_argument("--out", default="", help="also write the filled script here")
    p.add_argument("--dry_run", action="store_true", help="print the script, submit nothing")
    return p


def main(argv: Sequence[str] | None = None, run=subprocess.run) -> int:
    """CLI entry; returns the exit status (sbatch's when it runs)."""
    args, rest = parser().parse_known_args(argv)
    bad = [a for a in rest if not a.startswith("--config.")]
    if bad:
        print(f"error: unrecognised arguments: {' '.join(bad)}", file=sys.stderr)
        return 2
    try:
        script = fill(
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            config=args.config,
            workdir=args.workdir,
            python=args.python,
            overrides=rest,
            job_name=args.job_name,
            time=args.time,
            cpus_per_task=args.cpus_per_task,
            partition=args.partition,
            account=args.account,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        with open(args.out, "w") as f:
            f.write(script)
    if args.dry_run:
        print(script, end="")
        print(f"# submit with: sbatch {shlex.quote(args.out) if args.out else '< this script'}")
        return 0
    if shutil.which("sbatch") is None:
        print("error: sbatch is not on PATH; run this on a SLURM login node", file=sys.stderr)
        return 2
    return run(["sbatch"], input=script, text=True, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
