"""Cloud TPU pod launcher: run `python -m launch.main ... --multihost` on every worker of a TPU VM.

    python -m launch.pod --tpu=my-v5p-64 --zone=us-east5-a --project=my-proj \\
        --config=configs/spg.py:llada8b --workdir=/mnt/runs/spg8b --dry_run
    python -m launch.pod ... --config.rl.steps=100      # --config.* overrides are passed through

It builds one `gcloud compute tpus tpu-vm ssh NAME --worker=all --command=...` command line; the
remote command changes to the repository on each worker (`--repo_dir`, which must already hold a
checkout with the package installed, `pip install -e .` plus a TPU build of JAX), runs the optional
`--setup` command, then `launch.main` with `--multihost`. On a Cloud TPU VM
`jax.distributed.initialize()` discovers the coordinator, process count and process id by itself,
so no addresses are passed. `--dry_run` prints the command and runs nothing; without it the command
is run with `subprocess` (gcloud must be installed and authenticated). Nothing here touches the
network except that gcloud call.

The workdir must be a path that `launch.main` can write with local file I/O on every worker (a
local disk, an NFS or gcsfuse mount); `gs://` URLs are refused because `launch.main` creates the
workdir with `os.makedirs`, which would make a local directory named `gs:` on each worker.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence


def _cd(repo_dir: str) -> str:
    """`cd DIR`, quoted, keeping a leading `~/` expandable on the remote shell."""
    if repo_dir == "~":
        return 'cd "$HOME"'
    if repo_dir.startswith("~/"):
        return 'cd "$HOME"/' + shlex.quote(repo_dir[2:])
    return "cd " + shlex.quote(repo_dir)


def remote_command(
    *,
    config: str,
    workdir: str,
    repo_dir: str = "~/lmrl",
    python: str = "python3",
    setup: str = "",
    env: Sequence[str] = (),
    overrides: Sequence[str] = (),
) -> str:
    """The shell command every worker runs.

    Args:
      config: `--config` value for launch.main (`configs/X.py[:variant]`).
      workdir: run directory on each worker (local path or shared mount; not `gs://`).
      repo_dir: the checkout on each worker (`~/` is expanded remotely).
      python: interpreter on the workers.
      setup: optional shell command run first (e.g. `source .venv/bin/activate`), verbatim.
      env: `KEY=VALUE` environment assignments for the run.
      overrides: extra launch.main flags, e.g. `--config.rl.steps=100`.

    Returns:
      One shell command string (parts joined with `&&`).
    """
    for kv in env:
        key, sep, _ = kv.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--env expects KEY=VALUE, got {kv!r}")
    main = [python, "-m", "launch.main", f"--config={config}", f"--workdir={workdir}"]
    main += ["--multihost", *overrides]
    run = shlex.join(main)
    if env:
        run = "env " + " ".join(shlex.quote(kv) for kv in env) + " " + run
    parts = [_cd(repo_dir)] + ([setup] if setup else []) + [run]
    return " && ".join(parts)


def gcloud_command(
    *, tpu: str, zone: str, project: str = "", worker: str = "all", command: str
) -> list[str]:
    """argv of `gcloud compute tpus tpu-vm ssh` running `command` on `worker` (default all)."""
    argv = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, f"--zone={zone}"]
    if project:
        argv.append(f"--project={project}")
    argv += [f"--worker={worker}", f"--command={command}"]
    return argv


def build(args: argparse.Namespace, overrides: Sequence[str]) -> list[str]:
    """The full gcloud argv for parsed CLI `args`; raises ValueError on bad input."""
    if args.workdir.startswith("gs://"):
        raise ValueError(
            f"--workdir={args.workdir}: launch.main writes the workdir with local file I/O; "
            "use a local path or a mount every worker sees (e.g. gcsfuse at /gcs/BUCKET/run)"
        )
    cmd = remote_command(
        config=args.config,
        workdir=args.workdir,
        repo_dir=args.repo_dir,
        python=args.python,
        setup=args.setup,
        env=args.env,
        overrides=overrides,
    )
    return gcloud_command(
        tpu=args.tpu, zone=args.zone, project=args.project, worker=args.worker, command=cmd
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m launch.pod",
        description="Run launch.main with --multihost on every worker of a Cloud TPU VM.",
        epilog="Unrecognised --config.* flags are passed through to launch.main.",
    )
    p.add_argument("--tpu", required=True, help="TPU VM name")
    p.add_argument("--zone", required=True, help="its zone, e.g. us-central2-b")
    p.add_argument("--project", default="", help="GCP project (default: gcloud's)")
    p.add_argument("--config", required=True, help="configs/X.py[:variant]")
    p.add_argument("--workdir", required=True, help="run directory on the workers")
    p.add_argument("--repo_dir", default="~/lmrl", help="checkout on each worker")
    p.add_argument("--python", default="python3", help="interpreter on the workers")
    p.add_argument("--setup", default="", help="shell command run first on each worker")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--worker", default="all", help="'all' (default) or worker ids")
    p.add_argument("--dry_run", action="store_true", help="print the command, run nothing")
    return p


def main(argv: Sequence[str] | None = None, run=subprocess.run) -> int:
    """CLI entry; returns the exit status (gcloud's when it runs)."""
    args, rest = parser().parse_known_args(argv)
    bad = [a for a in rest if not a.startswith("--config.")]
    if bad:
        print(f"error: unrecognised arguments: {' '.join(bad)}", file=sys.stderr)
        return 2
    try:
        argv_gcloud = build(args, rest)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(shlex.join(argv_gcloud), flush=True)
    if args.dry_run:
        return 0
    if shutil.which("gcloud") is None:
        print("error: gcloud is not on PATH; install the Google Cloud CLI", file=sys.stderr)
        return 2
    return run(argv_gcloud, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
