"""Entry point: `python -m launch.main --config=configs/X.py[:variant] --workdir=DIR`.

Parses flags (config locked, so misspelt keys fail), initialises multi-host JAX if asked, checks
the config, locks the workdir and writes the resolved config there (refusing a workdir that holds
another experiment or, without --allow_config_change, another config), and calls the runner named
by `config.experiment`. A `UserError` is printed as one line with exit code 2; any other exception
is a bug and keeps its traceback (exit code 1). Either way the process exits without waiting on
background threads (a failed checkpoint save can leave some blocked).
"""

from __future__ import annotations

import os
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from launch.workdir import lock_workdir, prepare_workdir, validate_config, write_result
from models.errors import UserError
from train.host_memory import retain_freed_memory

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file[:variant].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<experiment>).")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize first.")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PID = flags.DEFINE_integer("process_id", None, "This process's id (multi-host).")
# reliability flags (issue 14)
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir whose config.json differs (recorded there)."
)
_FALLBACK = flags.DEFINE_bool(
    "restore_fallback", False, "Resume from the previous good checkpoint if the latest is bad."
)
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Print parameter count, sharding plan and compiled memory; do not train."
)


def run_experiment(
    config, workdir, *, allow_config_change=False, restore_fallback=False, process_index=0
):
    """Checks the config, takes the workdir, runs the experiment, writes result.json.

    `process_index` (multi-host) picks this process's lock file in the workdir.

    Raises:
      UserError: bad input (config values, mesh, workdir, checkpoints), as one line.
    """
    validate_config(config)  # before importing jax: a typo or a taken workdir fails in a second
    lock_workdir(workdir, process_index=process_index)
    import jax

    from launch.experiments import get_runner
    from models.sharding import validate_mesh_shape
    from train.checkpoint import Checkpointer
    from train.step import SkipGuard

    validate_mesh_shape(config.mesh_shape, jax.device_count())
    prepare_workdir(config, workdir, allow_config_change=allow_config_change)
    Checkpointer.default_fallback = restore_fallback
    SkipGuard.default_max = int(config.get("max_consecutive_skips", 0) or 0)
    result = get_runner(config.experiment)(config, workdir)
    write_result(workdir, result)
    return result


def _exit_now(code: int):
    """Exits without joining threads: a failed orbax save can leave non-daemon threads blocked."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:  # before JAX starts its threads: XLA:CPU's step buffers stay mapped between steps
        retain_freed_memory()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        _exit_now(2)
    try:
        config = _CONFIG.value
    except OSError as e:  # config_flags defers a failed load to the first access
        print(f"error: cannot load --config ({e})", file=sys.stderr)
        _exit_now(2)
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/spg.py")
    if _MULTIHOST.value:
        import jax

        jax.distributed.initialize(
            coordinator_address=_COORD.value, num_processes=_NPROC.value, process_id=_PID.value
        )
        process_index = jax.process_index()
    else:
        process_index = 0
    workdir = _WORKDIR.value or os.path.join("runs", config.experiment)
    try:
        if _DRY_RUN.value:  # nothing is written, no workdir is created or locked
            from launch.experiments import get_dry_run_parts
            from train.dry_run import report

            validate_config(config)
            report(config, get_dry_run_parts(config))
            return
        run_experiment(
            config,
            workdir,
            allow_config_change=_ALLOW_CHANGE.value,
            restore_fallback=_FALLBACK.value,
            process_index=process_index,
        )
    except UserError as e:
        if os.environ.get("LMRL_TRACEBACK") == "1":
            traceback.print_exc()
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        _exit_now(2)
    except Exception:  # a bug: keep the traceback, but never hang on blocked threads
        traceback.print_exc()
        _exit_now(1)
    # Returns None: app.run would sys.exit() with a returned value; results live in result.json.


def _config_path(argv) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1].split(":", 1)[0]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1].split(":", 1)[0]
    return None


def _parse_flags(argv):
    """absl flag parsing, with config errors shown as one line instead of a traceback."""
    path = _config_path(argv)
    if path and not os.path.isfile(path):
        print(f"error: config file {path} not found", file=sys.stderr)
        sys.exit(2)
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
        if os.environ.get("LMRL_TRACEBACK") == "1":
            raise
        text = str(e)
        if "Traceback" in text:  # a config file raised: keep its own last line
            text = [ln for ln in text.splitlines() if ln.strip()][-1]
        text = text.replace("\\n", " ").replace("\\'", "'")
        if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1]
        msg = " ".join(text.split())
        print(f"error: bad --config or override: {msg}", file=sys.stderr)
        sys.exit(2)


def run_main():
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run_main()
