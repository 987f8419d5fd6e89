"""Checkpoints: orbax `CheckpointManager` (async, keep-N, atomic) behind a small interface.

A checkpoint holds the TrainState plus a JSON `extra` dict (data-iterator position, stage names,
anything a runner needs to resume exactly), the step's metrics, its metrics.jsonl length, and a
fingerprint of the state (checksums of its arrays' bits, computed where they live). Guarantees:

- Every background save is checked (before the next save, at `wait()` and `close()`); a failed
  save raises `CheckpointError` naming the step and stops the run; waits on orbax threads are
  bounded, so a failed save never hangs the process.
- `restore` verifies the fingerprint and that every float array is finite. A bad checkpoint is
  refused with one line naming the step and the previous good one; with `fallback=True` (the
  `--restore_fallback` flag) the bad steps are moved to `<dir>.rejected/` and the previous good
  one is restored.
- Unreadable checkpoints raise `CheckpointError` with the path, never a partial restore.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time

import jax
import orbax.checkpoint as ocp
from etils import epath

from models.errors import UserError
from models.layout import has_unfused_projections
from train.fingerprint import fingerprint

_META = ("_fingerprint", "_metrics", "_log_offset")  # reserved keys in the stored extra dict
_CLOSE_TIMEOUT_S = 60.0


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable, corrupt, non-finite or could not be written."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


class _OrbaxErrors(logging.Filter):
    """Keeps orbax's background-save tracebacks off the console; the error is re-raised by us."""

    def __init__(self):
        super().__init__()
        self.last = None

    def filter(self, record):
        if record.exc_info and "orbax" in (record.pathname or ""):
            self.last = _first_line(record.exc_info[1]) if record.exc_info[1] else record.msg
            return False
        return True


def _float_shapes(tree) -> list[tuple]:
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "shape") and hasattr(x, "dtype")]
    return sorted(
        tuple(x.shape)
        for x in leaves
        if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
        and jax.numpy.issubdtype(x.dtype, jax.numpy.inexact)
    )


class Checkpointer:
    """Saves and restores (state, extra) under `directory/<step>/`.

    Args:
      directory: checkpoint root (created if missing).
      keep: how many recent checkpoints to keep.
      async_save: write in a background thread (call `wait()` or `close()` before exiting).
      fallback: on a corrupt latest checkpoint, restore the previous good one (None: the
        process-wide default set by `set_default_fallback`, i.e. `--restore_fallback`).
    """

    default_fallback = False

    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True, fallback=None):
        self.directory = os.path.abspath(directory)
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointError(f"checkpoint path {self.directory} exists and is not a directory")
        if keep < 1:
            raise CheckpointError(f"keep_checkpoints must be >= 1, got {keep}")
        self.fallback = Checkpointer.default_fallback if fallback is None else fallback
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        self._pending: int | None = None
        self._filter = _OrbaxErrors()
        logging.getLogger("absl").addFilter(self._filter)
        self._mgr = None
        self._open()

    def _open(self):
        try:
            self._mgr = ocp.CheckpointManager(self.directory, options=self._options)
        except Exception as e:  # orbax raises many kinds on a corrupt or unwritable root
            raise CheckpointError(
                f"cannot open checkpoint directory {self.directory}: {_first_line(e)}"
            ) from e

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mgr.all_steps())

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _fail(self, step: int, e) -> None:
        cause = _first_line(e) if isinstance(e, BaseException) else str(e)
        if self._filter.last and self._filter.last not in cause:
            cause = f"{cause}: {self._filter.last}"
        self._abort()
        raise CheckpointError(
            f"saving checkpoint step {step} to {self._step_dir(step)} failed ({cause}); "
            "training stopped, earlier checkpoints are kept: fix the directory (permissions, "
            "free space) and rerun to resume"
        ) from (e if isinstance(e, BaseException) else None)

    def _check_pending(self) -> None:
        """Waits for the last background save and checks that its step directory committed."""
        step, self._pending = self._pending, None
        if step is None:
            return
        try:
            self._mgr.wait_until_finished()
        except Exception as e:
            self._fail(step, e)
        if not os.path.isdir(self._step_dir(step)):  # orbax logs some failures and goes on
            self._fail(step, "the step directory was not committed")

    def save(
        self,
        step: int,
        state,
        extra: dict | None = None,
        *,
        metrics=None,
        log_offset: int | None = None,
        force=False,
    ):
        """Starts saving `state` (checked at the next save, `wait()` or `close()`).

        Args:
          step: the checkpoint's step (its directory name).
          state: the pytree to save; every float array must be finite.
          extra: JSON-able metadata returned by `restore`.
          metrics: the step's metrics (floats), returned by `metrics_at(step)`.
          log_offset: length of metrics.jsonl at this step (a resume cuts the log back to it).
          force: save even if the manager's period would skip this step.

        Returns:
          Whether a save was started.

        Raises:
          CheckpointError: the previous save failed, this one cannot start, or `state` has
            non-finite values.
        """
        self._check_pending()
        fp = fingerprint(state)
        if fp["nonfinite"]:
            raise CheckpointError(
                f"state at step {step} has non-finite values in {', '.join(fp['nonfinite'][:3])}; "
                "not saving it over the last good checkpoint"
            )
        meta = {
            "_fingerprint": fp["sha256"],
            "_metrics": {k: float(v) for k, v in (metrics or {}).items()},
            "_log_offset": log_offset,
        }
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            extra=ocp.args.JsonSave({**dict(extra or {}), **meta}),
        )
        try:
            saved = self._mgr.save(int(step), args=args, force=force)
        except Exception as e:
            self._fail(step, e)
        if saved:
            self._pending = int(step)
        return saved

    def _check_shapes(self, abstract, step: int) -> None:
        """Compares array shapes with the checkpoint's metadata before reading any array.

        A restore that fails half-way abandons reads that later report 'Event loop is closed'
        tracebacks; a checkpoint of another model size is refused here, before any read starts.
        """
        try:
            meta = ocp.StandardCheckpointHandler().metadata(
                epath.Path(self._step_dir(step)) / "state"
            )
            stored = _float_shapes(meta)
        except Exception:  # unreadable metadata: the restore below reports it
            return
        if has_unfused_projections(meta) and not has_unfused_projections(abstract):
            raise CheckpointError(
                f"checkpoint step {step} ({self._step_dir(step)}) has separate q/k/v or gate/up "
                "projections (wq/wk/wv, w_gate/w_up), written before they were fused into "
                "wqkv and w_gate_up; convert its trees with models.layout.fuse_projections "
                "(the same numbers, rearranged) and save them again"
            )
        if stored != _float_shapes(abstract):
            raise CheckpointError(
                f"checkpoint step {step} ({self._step_dir(step)}) does not match this run "
                "(its arrays have other shapes: another model or optimizer config?)"
            )

    def _load(self, abstract, step: int):
        self._check_shapes(abstract, step)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore()
        )
        try:
            out = self._mgr.restore(step, args=args)
        except Exception as e:
            raise CheckpointError(
                f"checkpoint step {step} ({self._step_dir(step)}) is unreadable or does not "
                f"match this run ({_first_line(e)})"
            ) from e
        state, extra = out["state"], dict(out["extra"] or {})
        want = extra.get("_fingerprint")
        fp = fingerprint(state)
        if fp["nonfinite"]:
            names = ", ".join(fp["nonfinite"][:3])
            raise CheckpointError(
                f"checkpoint step {step} ({self._step_dir(step)}) has non-finite values in {names}"
            )
        if want and fp["sha256"] != want:
            raise CheckpointError(
                f"checkpoint step {step} ({self._step_dir(step)}) does not match the fingerprint "
                "saved with it (a corrupt file)"
            )
        return state, {k: v for k, v in extra.items() if k not in _META}

    def restore(self, abstract_state, step: int | None = None):
        """Restores the latest (or given) step into the structure of `abstract_state`.

        Returns:
          (state, extra) or None when there is no checkpoint.

        Raises:
          CheckpointError: the checkpoint cannot be read, has another structure, does not match
            its fingerprint or holds non-finite values (one line naming the step and, if there
            is one, the previous good checkpoint).
        """
        self._check_pending()
        steps = self.all_steps() if step is None else [int(step)]
        if not steps:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        try:
            return self._load(abstract, steps[-1])
        except CheckpointError as err:
            if step is not None:
                raise
            first = err
        good = None
        for s in reversed(steps[:-1]):
            try:
                good = (s, self._load(abstract, s))
                break
            except CheckpointError:
                continue
        if good is None:
            raise CheckpointError(
                f"{first}; no earlier good checkpoint: move {self.directory} away to start fresh"
            ) from None
        if not self.fallback:
            raise CheckpointError(
                f"{first}; the previous good checkpoint is step {good[0]}: rerun with "
                "--restore_fallback to resume from it"
            ) from None
        self._reject([s for s in steps if s > good[0]])
        logging.getLogger(__name__).warning("restored previous good checkpoint step %d", good[0])
        return good[1]

    def _reject(self, steps: list[int]) -> None:
        """Moves bad step directories to `<dir>.rejected/` so later saves can reuse the steps."""
        self._abort()
        dest = f"{self.directory}.rejected"
        os.makedirs(dest, exist_ok=True)
        for s in steps:
            shutil.move(self._step_dir(s), os.path.join(dest, f"{s}.{int(time.time())}"))
        self._open()

    def metrics_at(self, step: int) -> tuple[dict[str, float], int | None]:
        """The metrics and metrics.jsonl length saved with checkpoint `step` ({}, None if none)."""
        self._check_pending()
        try:
            out = self._mgr.restore(
                int(step), args=ocp.args.Composite(extra=ocp.args.JsonRestore())
            )
        except Exception as e:
            raise CheckpointError(
                f"checkpoint step {step} ({self._step_dir(step)}) is unreadable ({_first_line(e)})"
            ) from e
        extra = dict(out["extra"] or {})
        metrics = {k: float(v) for k, v in (extra.get("_metrics") or {}).items()}
        return metrics, extra.get("_log_offset")

    def wait(self):
        """Blocks until the pending save is written; raises `CheckpointError` if it failed."""
        self._check_pending()

    def _abort(self):
        """Closes the manager with a bounded wait (a failed save can leave threads blocked)."""
        mgr, self._mgr = self._mgr, None
        if mgr is None:
            return
        t = threading.Thread(target=lambda: _quiet_close(mgr), daemon=True)
        t.start()
        t.join(_CLOSE_TIMEOUT_S)

    def close(self):
        """Checks the pending save, then closes the manager."""
        try:
            self._check_pending()
        finally:
            self._abort()
            logging.getLogger("absl").removeFilter(self._filter)


def _quiet_close(mgr):
    try:
        mgr.close()
    except Exception:  # the failure was already reported by the caller
        pass
