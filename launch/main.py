"""Entry point: `python -m launch.main --config=configs/X.py[:variant] --workdir=DIR`.

Parses flags (config locked, so misspelt keys fail), initialises multi-host JAX if asked, writes the
resolved config to the workdir (refusing a workdir that holds another experiment), and calls the
runner named by `config.experiment`.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from launch.workdir import UserError, prepare_workdir, write_result

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file[:variant].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<experiment>).")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize first.")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PID = flags.DEFINE_integer("process_id", None, "This process's id (multi-host).")
# --- dry run (runtime branch) ---
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Print parameter count, sharding plan and compiled memory; do not train."
)
# --- end dry run ---


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/spg.py")
    if _MULTIHOST.value:
        import jax

        jax.distributed.initialize(
            coordinator_address=_COORD.value, num_processes=_NPROC.value, process_id=_PID.value
        )
    workdir = _WORKDIR.value or os.path.join("runs", config.experiment)
    try:
        # --- dry run (runtime branch): nothing is written, no workdir is created ---
        if _DRY_RUN.value:
            from train.dry_run import report

            report(config)
            return
        # --- end dry run ---
        prepare_workdir(config, workdir)
        from launch.experiments import get_runner

        result = get_runner(config.experiment)(config, workdir)
        write_result(workdir, result)
    except UserError as e:
        if os.environ.get("LMRL_TRACEBACK") == "1":
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    del result  # app.run would sys.exit() with a returned value; results live in result.json


def _parse_flags(argv):
    """absl flag parsing, with config errors shown as one line instead of a traceback."""
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
