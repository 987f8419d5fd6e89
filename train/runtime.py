"""The runtime every runner shares: mesh, sharded state, restore, the update step, `finish`.

A runner is: data -> model -> loss -> `Runtime` -> `train.loop.fit` -> `finish`.

- The mesh comes from `config.mesh_shape` over all global devices (every process of a
  multi-process run), with `AxisType.Auto` axes; a shape that does not fit is a `MeshError`.
- The state is created already sharded: `jax.jit(init_fn, out_shardings=...)`, the shardings
  read from the parameters' logical axis names (`models/sharding.py`), so no process ever holds
  a whole model on one device.
- Batches are built identically on every process (a pure function of the loop step) and each
  process hands over only its addressable shards (`Runtime.put`).
- `finish` writes `result.json` and `plot.png` and prints the result table, the same way for
  every method; only process 0 writes files.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from models.sharding import batch_shardings, make_mesh, state_shardings
from train.checkpoint import Checkpointer, CheckpointError
from train.loop import restore_or
from train.metrics import MetricWriter, clean_result, write_hparams, write_result_file
from train.plot import plot_metrics
from train.step import make_update_step


def _saved_extra(ckpt: Checkpointer, step: int) -> dict:
    """The JSON `extra` of checkpoint `step`, read without the state (empty if unreadable)."""
    path = os.path.join(ckpt.directory, str(step), "extra", "metadata")
    try:
        with open(path) as f:
            return dict(json.load(f))
    except (OSError, ValueError, TypeError):
        return {}


def is_main_process() -> bool:
    return jax.process_index() == 0


class NullWriter:
    """The metric writer of processes other than 0: returns the values, writes nothing."""

    def __init__(self, workdir: str):
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self.tb_dir = os.path.join(workdir, "tb")

    def write(self, step: int, metrics: dict) -> dict[str, float]:
        del step
        return {k: float(np.asarray(v)) for k, v in metrics.items()}

    def text(self, step: int, tag: str, text: str) -> None:
        del step, tag, text

    def flush(self):
        pass

    def close(self):
        pass


class Runtime:
    """Mesh, shardings and jitted functions for one run (see the module docstring).

    Args:
      config: the run's ConfigDict; reads `mesh_shape`.
      devices: devices to build the mesh over (default: `jax.devices()`, all processes).
    """

    def __init__(self, config, devices=None):
        self.mesh = make_mesh(tuple(config.get("mesh_shape", (-1, 1, 1))), devices)
        self.state_sharding = None

    @property
    def num_devices(self) -> int:
        return int(self.mesh.size)

    def abstract_state(self, init_fn, *args):
        """Shapes, dtypes and shardings of `init_fn(*args)`'s state, without computing anything."""
        shapes = jax.eval_shape(init_fn, *args)
        shardings = state_shardings(shapes, self.mesh)
        return shapes, shardings

    def create_state(self, init_fn, *args):
        """Runs `init_fn(*args) -> TrainState` under jit with sharded outputs.

        Each device computes only its own shards of the parameters and optimizer state. `args`
        (arrays, e.g. a trained backbone) are arguments of the jitted init, never constants.
        """
        _, self.state_sharding = self.abstract_state(init_fn, *args)
        return jax.jit(init_fn, out_shardings=self.state_sharding)(*args)

    def shard_state(self, state):
        """Places a state that already exists on this run's shardings (and uses them from now on).

        For a state assembled eagerly around parameters a previous stage trained (READ's adapted
        backbone): the large leaves arrive already sharded, only the new small ones move.
        """
        self.state_sharding = state_shardings(state, self.mesh)
        return jax.device_put(state, self.state_sharding)

    def restore(self, ckpt: Checkpointer | None, state, *, expect: dict | None = None):
        """Restores the latest checkpoint with `state`'s shardings (any mesh, any process count).

        Args:
          ckpt: the run's Checkpointer (or None).
          state: the freshly created, sharded state (the structure to restore into).
          expect: `extra` entries the checkpoint must match (e.g. `{"scan_layers": False}`);
            a mismatch is refused with a message naming the option, before reading any array.

        Returns:
          (state, extra, resumed); pass `extra` to `fit(resume=...)` when `resumed`.

        Raises:
          CheckpointError: unreadable, another structure, or an `expect` mismatch.
        """
        step = ckpt.latest_step() if ckpt is not None else None
        if step is not None and expect:
            saved = _saved_extra(ckpt, step)
            for key, want in expect.items():
                if key in saved and saved[key] != want:
                    raise CheckpointError(
                        f"checkpoint {os.path.join(ckpt.directory, str(step))} was written with "
                        f"{key}={saved[key]!r} but this run has {key}={want!r}; rerun with "
                        f"--config.model.{key}={saved[key]!r}, or convert the parameters "
                        "(models.layout.to_scanned / to_unscanned) into a new workdir"
                    )
        state, extra, resumed = restore_or(ckpt, state)
        return state, extra, resumed

    def put(self, batch):
        """Host batch (identical on every process) -> global arrays split on the batch axis."""
        shardings = batch_shardings(batch, self.mesh)

        def one(x, s):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

        return jax.tree.map(one, batch, shardings)

    def jit(self, fn, **kw):
        """`jax.jit(fn)` called inside the mesh context (activation constraints see the mesh)."""
        jitted = jax.jit(fn, **kw)

        def call(*args, **kwargs):
            with jax.set_mesh(self.mesh):
                return jitted(*args, **kwargs)

        call.jitted = jitted
        return call

    def update_step(self, loss_fn, tx, *, microbatches: int = 1, donate: bool = True):
        """The jitted update step with this run's state sharding; batches come from `put`."""
        if self.state_sharding is None:
            raise RuntimeError("call create_state before update_step")
        step = make_update_step(
            loss_fn,
            tx,
            num_microbatches=microbatches,
            state_sharding=self.state_sharding,
            donate=donate,
        )

        def update(state, batch):
            with jax.set_mesh(self.mesh):
                return step(state, batch)

        update.jitted = step
        return update

    def writer(self, workdir: str, **kw):
        """A MetricWriter on process 0, a NullWriter elsewhere."""
        return MetricWriter(workdir, **kw) if is_main_process() else NullWriter(workdir)


def finish(
    workdir: str,
    result: dict,
    *,
    metrics_path: str,
    plot_keys: list[str],
    title: str,
    lines: list[tuple[str, str]] = (),
    table: str | None = None,
) -> dict:
    """Ends a run the same way for every method: result.json, plot.png, a printed table.

    Args:
      workdir: the run directory.
      result: final metrics (numbers or strings); written to `workdir/result.json`.
      metrics_path: the run's metrics.jsonl (plotted).
      plot_keys: metric names to plot, those present.
      title: first line of the table and the plot title.
      lines: extra (label, value) rows for the table (paths, counts).
      table: a method's own before/after table, printed instead of one row per result value.

    Returns:
      `result` with every value a float or a string.
    """
    clean = clean_result(result)
    if not is_main_process():
        return clean
    write_result_file(workdir, clean)
    png = os.path.join(workdir, "plot.png")
    if os.path.exists(metrics_path):
        plot_metrics(metrics_path, plot_keys, png, title=title, result=clean)
    config_path = os.path.join(workdir, "config.json")
    if os.path.exists(config_path):  # written by launch.main: the config as TensorBoard hparams
        try:
            with open(config_path) as f:
                write_hparams(workdir, json.load(f), clean)
        except (OSError, ValueError) as e:
            print(f"warning: TensorBoard hparams not written ({e})")
    print("\n" + "=" * 64)
    print(title)
    if table is not None:
        print(table)
    for k, v in clean.items() if table is None else ():
        print(f"  {k:<28s} {v:.4f}" if isinstance(v, float) else f"  {k:<28s} {v}")
    for label, value in [*lines, ("result", os.path.join(workdir, "result.json")), ("plot", png)]:
        print(f"  {label:<28s} {value}")
    print("=" * 64)
    return clean
