"""Checkpoints: orbax `CheckpointManager` (async, keep-N, atomic) behind a small interface.

A checkpoint holds the TrainState plus a JSON `extra` dict (data-iterator position, stage names,
anything a runner needs to resume exactly). Unreadable checkpoints raise `CheckpointError` with the
path, never a partial restore.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, unreadable, or does not match the run."""


class Checkpointer:
    """Saves and restores (state, extra) under `directory/<step>/`.

    Args:
      directory: checkpoint root (created if missing).
      keep: how many recent checkpoints to keep.
      async_save: write in a background thread (call `wait()` before exiting).
    """

    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointError(f"checkpoint path {self.directory} exists and is not a directory")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        try:
            self._mgr = ocp.CheckpointManager(self.directory, options=options)
        except Exception as e:  # orbax raises many kinds on a corrupt root
            raise CheckpointError(f"cannot open checkpoint directory {self.directory}: {e}") from e

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mgr.all_steps())

    def save(self, step: int, state, extra: dict | None = None, *, force: bool = False) -> bool:
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(dict(extra or {}))
        )
        return self._mgr.save(int(step), args=args, force=force)

    def restore(self, abstract_state, step: int | None = None):
        """Restores the latest (or given) step into the structure of `abstract_state`.

        Returns:
          (state, extra) or None when there is no checkpoint.

        Raises:
          CheckpointError: the checkpoint exists but cannot be read or has another structure.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore()
        )
        path = os.path.join(self.directory, str(step))
        try:
            out = self._mgr.restore(step, args=args)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(
                f"checkpoint {path} is unreadable or does not match this run ({msg[:300]}); "
                "delete or move it to start fresh"
            ) from e
        return out["state"], dict(out["extra"] or {})

    def wait(self):
        self._mgr.wait_until_finished()

    def close(self):
        self._mgr.wait_until_finished()
        self._mgr.close()
