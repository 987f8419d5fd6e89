"""Executors: RL roles, each on its own sub-mesh with its own sharding and dtype.

LlamaRL (arXiv:2505.24034; spec `llamarl.md` §1, §5.1, §6.1): the trainer and the generator own
disjoint device groups (or share them, the co-located baseline), each with its own parallelism
plan and precision, and run concurrently; arrays only cross between them at top level through the
channels (a cross-mesh move inside jit is an error).

- `TrainerExecutor`: a `train.runtime.Runtime` over the trainer's devices (its own
  `(data, fsdp, tensor)` mesh shape), the state created sharded there, the shared jitted update
  step (`train_step`), and the policy version (= number of updates applied).
- `GeneratorExecutor`: a mesh over the generator's devices, the KV-cache sampler jitted once
  (`generate`), and the scorer: the task's verifier and the group advantages run on the host in
  the generator's loop (`rl.run_ar.Rollouts.batch`, shared with the GRPO runner). It returns a
  `Rollout` carrying the behaviour log-probs μ computed by the weights it sampled with, which may
  be cast to another dtype on the way (`param_dtype`).

Layouts (`layout`): `split` puts the trainer on the first `trainer_devices` devices and the
generator on the rest; `colocated` puts both on every device; `auto` is `split` when there are
at least two devices and `colocated` otherwise (a one-device run still goes through the same code
path; the result records which layout ran).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections as mlc

from models.errors import UserError
from models.sharding import make_mesh, state_shardings
from rl.distributed.channels import Rollout
from train.runtime import Runtime
from train.state import TrainState


class LayoutError(UserError, ValueError):
    """Role device groups that do not fit the run's devices."""


def role_devices(layout: str, trainer_devices: int, devices=None):
    """(trainer devices, generator devices, resolved layout name) for `layout`."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if layout == "auto":
        layout = "split" if n >= 2 else "colocated"
    if layout == "colocated":
        return devices, devices, f"colocated ({n} devices)"
    if layout != "split":
        raise LayoutError(f"unknown layout {layout!r}; expected auto, split or colocated")
    t = trainer_devices if trainer_devices > 0 else n // 2
    if not 0 < t < n:
        raise LayoutError(
            f"layout=split needs 1 <= trainer_devices < {n} devices, got {t}; run with more "
            "devices (e.g. JAX_NUM_CPU_DEVICES=8 on CPU) or --config.llamarl.layout=colocated"
        )
    return devices[:t], devices[t:], f"split (trainer {t}, generator {n - t} devices)"


class TrainerExecutor:
    """The trainer role: sharded state, jitted update step and policy version on its sub-mesh.

    Args:
      mesh_shape: `(data, fsdp, tensor)` over `devices` (-1 takes the rest).
      devices: the trainer's devices.
      loss_fn: an objective from `rl.objectives`.
      tx: the optimizer.
      microbatches: minibatch scan length inside the step.
    """

    def __init__(self, mesh_shape, devices, loss_fn, tx, *, microbatches: int = 1):
        self.rt = Runtime(mlc.ConfigDict({"mesh_shape": tuple(mesh_shape)}), devices)
        self.loss_fn, self.tx, self.microbatches = loss_fn, tx, microbatches
        self.state = None
        self.version = 0
        self._update = None

    @property
    def mesh(self):
        return self.rt.mesh

    def init_state(self, params, rest, rng, frozen_extra=None):
        """The TrainState from warm-start `params`/`rest`, placed with this mesh's shardings."""

        def init():
            frozen = {"policy": rest, **(frozen_extra or {})}
            return TrainState.create({"policy": params}, self.tx, rng, frozen)

        _, self.rt.state_sharding = self.rt.abstract_state(init)
        self.state = jax.device_put(init(), self.rt.state_sharding)
        self.version = int(jax.device_get(self.state.step))
        self._update = self.rt.update_step(
            self.loss_fn, self.tx, microbatches=self.microbatches, donate=True
        )
        return self.state

    def train_step(self, batch) -> dict:
        """One update on a host batch; bumps the policy version. Returns device metrics."""
        self.state, metrics = self._update(self.state, self.rt.put(batch))
        self.version += 1
        return metrics

    def policy_params(self):
        return self.state.params["policy"]


class GeneratorExecutor:
    """The generator role: its mesh, the sampler and the host scorer.

    Args:
      mesh_shape: `(data, fsdp, tensor)` over `devices`.
      devices: the generator's devices.
      rollouts: a `rl.run_ar.Rollouts` (prompts, sampler, verifier, advantages, batch layout).
      param_dtype: dtype the weights are cast to on send (`float32` keeps them exact).
      generator_id: stamped on every rollout.
      latency_per_token_s: injected sleep per generated token (benchmarks).
    """

    def __init__(
        self,
        mesh_shape,
        devices,
        rollouts,
        *,
        param_dtype="float32",
        generator_id=0,
        latency_per_token_s: float = 0.0,
    ):
        self.mesh = make_mesh(tuple(mesh_shape), devices)
        # Benchmarks only: a sleep per generated token standing in for memory-bound decode or
        # tool latency (spec §6.2 mode 2); it frees the CPU and the GIL.
        self.latency_per_token_s = float(latency_per_token_s)
        self.rollouts = rollouts
        self.param_dtype = jnp.dtype(param_dtype)
        self.generator_id = generator_id
        self.rest = None

    @classmethod
    def from_config(cls, config, devices, graphdef, rest, task, tokenizer, *, generator_id=0):
        """The generator of `config.llamarl` (mesh, send dtype, injected latency) over `devices`,
        sampling `task` with `rl.run_ar.Rollouts`; its non-parameter state set to `rest`."""
        from rl.run_ar import Rollouts  # rl.run_ar imports the training stack; keep this lazy

        lc = config.llamarl
        gen = cls(
            lc.generator_mesh,
            devices,
            Rollouts(config, graphdef, task, tokenizer),
            param_dtype=lc.generator_param_dtype,
            generator_id=generator_id,
            latency_per_token_s=lc.inject_latency_per_token_s,
        )
        gen.set_rest(rest)
        return gen

    def param_shardings(self, params):
        return state_shardings(params, self.mesh)

    def view(self, params):
        """`params` (any placement) copied to this mesh with the module state, as the TrainState
        view `Rollouts` and `rl.ar_eval.evaluate` read (held-out evaluation on the generator)."""
        return _PolicyView(jax.device_put(params, self.param_shardings(params)), self.rest)

    def set_rest(self, rest):
        """Non-trainable module state (sent once; it never changes during RL)."""
        self.rest = jax.device_put(rest, state_shardings(rest, self.mesh))

    def rollout(self, params, seq: int, version: int) -> Rollout:
        """Samples, scores and packs step `seq`'s batch with weight set `version`."""
        t0 = time.perf_counter()
        view = _PolicyView(params, self.rest)
        batch, stats = self.rollouts.batch(view, seq)
        if self.latency_per_token_s > 0:
            time.sleep(self.latency_per_token_s * float(batch["score_mask"].sum()))
        idx = self.rollouts.prompt_indices(seq)
        stats = {k: float(v) for k, v in stats.items()}
        stats["time/generate"] = time.perf_counter() - t0
        return Rollout(
            seq=seq,
            prompt_ids=idx,
            batch=batch,
            reward=stats.get("rl/reward_mean", float("nan")),
            policy_version=version,
            generator_id=self.generator_id,
            stats=stats,
        )


class _PolicyView:
    """What `Rollouts.batch` reads from a TrainState: the policy's params and frozen leaves."""

    def __init__(self, params, rest):
        self.params = {"policy": params}
        self.frozen = {"policy": rest}
