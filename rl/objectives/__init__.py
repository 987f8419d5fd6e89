"""Objectives registered by name; a config picks one with `rl.objective = "<name>"`.

An objective computes a loss only (sampling, rewards and advantages run outside the gradient step).
Every factory has one signature,

    factory(graphdef, cfg: Mapping, *, mask_id: int | None = None, role: str = "policy")
        -> Objective(loss_fn, snapshots, plot_keys)

where `cfg` holds only the fields the objective declares with `@register(name, fields=...)` (a
key it does not declare is a `ConfigError` naming the closest field), `loss_fn` follows the
trainer's contract `(params, frozen, batch, rng) -> (loss_sum, denom, aux)`, and `snapshots` names
the frozen copies of the policy the loss reads from `frozen`: `ref` (the policy at the start of RL,
kept fixed) and `old` (the policy that sampled the current batch, refreshed before each step's µ
updates). Runners build those from the declaration (`initial_frozen`, `make_refresh_old`) and
never branch on the objective's name. Each method logs every loss metric under its own namespace,
declared with `@register(..., namespace=)` (default: the objective's name): `spg/` (also
`spg_elbo`, `spg_no_neg`), `d1/` (`diffu_grpo`), `wd1/`, `grpo/`, `rloo/` (the GRPO loss
registered as RLOO logs as its own method), `jepo/`, `aipo/`; runners' host statistics (rewards,
mixed groups, skipped updates) stay under `rl/`. `plot_keys` are the ones worth plotting.

`build(rl_config, graphdef, ...)` is how runners get one: it checks that every key of the config's
`rl` section is a field of the runner or of some registered objective (a misspelt field fails
with the closest name) and passes the chosen objective its declared fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp

from models.errors import UserError


class ConfigError(UserError, ValueError):
    """An objective field or name that no objective declares (one line, exit code 2)."""


SNAPSHOTS = ("ref", "old")

# What a runner's rollouts must hand the loss: verifier rewards turned into advantages, or
# JEPO's [x, c, a*] rows whose reward is the answer's likelihood.
BATCH_KINDS = ("rewards", "answer_likelihood")

_REGISTRY: dict[str, Callable] = {}
_FIELDS: dict[str, dict] = {}
_BATCH: dict[str, str] = {}
_NAMESPACE: dict[str, str] = {}

# name -> module that registers it (imported on first use).
_MODULES = {
    "spg": "rl.objectives.spg",
    "spg_elbo": "rl.objectives.spg",
    "spg_no_neg": "rl.objectives.spg",
    "diffu_grpo": "rl.objectives.diffu_grpo",
    "wd1": "rl.objectives.wd1",
    "grpo": "rl.objectives.grpo",
    "rloo": "rl.objectives.grpo",
    "jepo": "rl.objectives.jepo",
    "aipo": "rl.objectives.aipo",
}


@dataclasses.dataclass(frozen=True)
class Objective:
    """A built objective: the loss, the frozen snapshots it reads, its main metric names."""

    loss_fn: Callable
    snapshots: tuple[str, ...] = ()
    plot_keys: tuple[str, ...] = ()

    def __post_init__(self):
        bad = [s for s in self.snapshots if s not in SNAPSHOTS]
        if bad:
            raise ValueError(f"unknown snapshot(s) {bad}; objectives may declare {SNAPSHOTS}")


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def register(name: str, *, fields: Mapping, batch: str = "rewards", namespace: str = ""):
    """Decorator: registers an objective factory under `name` with its fields and defaults.

    The registered callable validates `cfg` against `fields`, fills the defaults, and calls the
    factory with the complete dict. `batch` (one of `BATCH_KINDS`) says what the rollouts build;
    `namespace` (default `name`) is the prefix of every metric its loss logs (`<namespace>/...`).
    """
    fields = dict(fields)
    if batch not in BATCH_KINDS:
        raise ValueError(f"batch kind {batch!r} not in {BATCH_KINDS}")

    def deco(fn):
        if name in _REGISTRY and _REGISTRY[name].__wrapped__ is not fn:
            raise ValueError(f"objective {name!r} registered twice")

        def factory(graphdef, cfg: Mapping | None = None, *, mask_id=None, role="policy"):
            given = dict(cfg or {})
            for key in given:
                if key not in fields:
                    raise ConfigError(
                        f"objective {name!r} has no field {key!r}{_suggest(key, fields)}; "
                        f"its fields: {', '.join(sorted(fields))}"
                    )
            out = fn(graphdef, {**fields, **given}, mask_id=mask_id, role=role)
            if not isinstance(out, Objective):
                raise TypeError(f"objective factory {name!r} must return an Objective")
            return out

        factory.__wrapped__ = fn
        factory.__name__ = fn.__name__
        factory.__doc__ = fn.__doc__
        _REGISTRY[name] = factory
        _FIELDS[name] = fields
        _BATCH[name] = batch
        _NAMESPACE[name] = namespace or name
        return fn

    return deco


def _load(name: str):
    if name not in _REGISTRY and name in _MODULES:
        importlib.import_module(_MODULES[name])


def get(name: str) -> Callable:
    """The factory registered as `name`, importing its module if needed."""
    _load(name)
    if name not in _REGISTRY:
        raise ConfigError(f"unknown objective {name!r}; known: {', '.join(names())}")
    return _REGISTRY[name]


def fields(name: str) -> dict:
    """The fields (with defaults) objective `name` declares."""
    get(name)
    return dict(_FIELDS[name])


def batch_kind(name: str) -> str:
    """What the rollouts build for objective `name` (one of `BATCH_KINDS`)."""
    get(name)
    return _BATCH[name]


def namespace(name: str) -> str:
    """The metric namespace of objective `name`: its loss logs only `<namespace>/...` keys."""
    get(name)
    return _NAMESPACE[name]


def names() -> list[str]:
    return sorted(set(_REGISTRY) | set(_MODULES))


def all_fields() -> set[str]:
    """Every field some registered objective declares."""
    for n in names():
        _load(n)
    return {k for f in _FIELDS.values() for k in f}


def build(
    rl, graphdef, *, runner_fields: Iterable[str], name=None, mask_id=None, role="policy"
) -> Objective:
    """The objective named by `rl.objective` (or `name`), given its declared fields from `rl`.

    Args:
      rl: the config's `rl` section (objective name, runner fields, objective fields).
      name: the objective, for runners whose config does not choose one (PCL: GRPO).
      graphdef: the policy's NNX graph definition.
      runner_fields: the `rl` keys the runner itself reads.
      mask_id: the mask token (masked-diffusion objectives).
      role: the params role of the policy.

    Raises:
      ConfigError: an `rl` key that neither the runner nor any objective knows, or an unknown
        objective; the message names the key and the closest known field.
    """
    rl = dict(rl)
    name = name or rl["objective"]
    declared = fields(name)
    from configs.common import RENAMED

    known = set(runner_fields) | all_fields() | {"objective"}
    for key in rl:
        if f"rl.{key}" in RENAMED:
            raise ConfigError(f"rl.{key} was renamed {RENAMED[f'rl.{key}']}; set that instead")
        if key not in known:
            raise ConfigError(
                f"rl.{key} is not a field of this runner or of any objective{_suggest(key, known)}"
            )
    cfg = {k: rl[k] for k in declared if k in rl}
    return get(name)(graphdef, cfg, mask_id=mask_id, role=role)


def initial_frozen(objective: Objective, params, frozen: dict) -> dict:
    """`frozen` plus a copy of `params` under each snapshot the objective declares."""
    out = dict(frozen)
    for name in objective.snapshots:
        out[name] = jax.tree.map(jnp.copy, params)
    return out


def make_refresh_old(objective: Objective, role: str = "policy") -> Callable | None:
    """`state -> state` that copies the policy into `frozen["old"]`, or None if not declared."""
    if "old" not in objective.snapshots:
        return None

    def refresh(state):
        old = jax.tree.map(jnp.copy, state.params[role])
        return state.replace(frozen={**state.frozen, "old": old})

    return refresh
