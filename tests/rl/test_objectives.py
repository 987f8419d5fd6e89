"""The objective contract: one factory signature, validated fields, declared snapshots, one
metric namespace per method, and runners that never branch on an objective's name."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from rl import objectives
from train.lm import build_transformer
from train.state import TrainState, split_module

MASK = 3


@pytest.fixture(scope="module")
def tiny():
    cfg = common.tiny_model(common.model_config(causal=False))
    model = build_transformer(cfg, 16, 0, causal=False, max_len=16)
    return split_module(model)


def test_every_objective_has_the_same_factory_and_declares_its_snapshots(tiny):
    graphdef, params, _ = tiny
    for name in objectives.names():
        factory = objectives.get(name)
        assert list(inspect.signature(factory).parameters) == ["graphdef", "cfg", "mask_id", "role"]
        obj = factory(graphdef, {}, mask_id=MASK)
        assert isinstance(obj, objectives.Objective) and callable(obj.loss_fn), name
        assert set(obj.snapshots) <= set(objectives.SNAPSHOTS), name
        assert objectives.batch_kind(name) in objectives.BATCH_KINDS
    get = objectives.get
    assert get("diffu_grpo")(graphdef, {}, mask_id=MASK).snapshots == ("old", "ref")
    assert get("diffu_grpo")(graphdef, {"kl_coef": 0.0}, mask_id=MASK).snapshots == ("old",)
    assert get("spg")(graphdef, {"kl_coef": 0.1}, mask_id=MASK).snapshots == ("ref",)
    assert get("spg")(graphdef, {}, mask_id=MASK).snapshots == ()
    assert get("wd1")(graphdef, {}, mask_id=MASK).snapshots == ()
    for name in ("grpo", "rloo", "jepo"):
        assert get(name)(graphdef, {"kl_coef": 0.1}).snapshots == ("ref",)
        assert get(name)(graphdef, {"kl_coef": 0.0}).snapshots == ()
    assert objectives.batch_kind("jepo") == "answer_likelihood"
    assert objectives.batch_kind("grpo") == objectives.batch_kind("spg") == "rewards"


def test_a_misspelt_objective_field_is_a_clear_error(tiny):
    graphdef, _, _ = tiny
    with pytest.raises(objectives.ConfigError, match="no field 'betta'.*did you mean 'beta'"):
        objectives.get("spg")(graphdef, {"betta": 2.0}, mask_id=MASK)
    with pytest.raises(ValueError, match="no field 'kl_coeff'.*'kl_coef'"):
        objectives.get("grpo")(graphdef, {"kl_coeff": 0.1})
    # Through a config: an `rl` key that neither the runner nor any objective declares.
    from configs import spg as spg_config
    from data.tokenizer import CharTokenizer
    from rl.run_spg import build_objective

    c = spg_config.get_config("tiny")
    assert build_objective(c, graphdef, CharTokenizer()).snapshots == ("ref",)
    c.rl.kl_coeff = 0.1
    with pytest.raises(objectives.ConfigError, match=r"rl\.kl_coeff .*did you mean 'kl_coef'"):
        build_objective(c, graphdef, CharTokenizer())
    with pytest.raises(objectives.ConfigError, match="unknown objective 'spgg'"):
        objectives.get("spgg")


def test_old_field_names_are_errors_naming_the_new_one(tiny):
    from configs import grpo as grpo_config
    from configs import spg as spg_config
    from data.tokenizer import CharTokenizer
    from launch.workdir import validate_config
    from models.errors import UserError
    from rl.run_spg import build_objective

    graphdef, _, _ = tiny
    c = spg_config.get_config("tiny")
    c.rl.ref_kl = 0.05
    with pytest.raises(objectives.ConfigError, match="rl.ref_kl was renamed rl.kl_coef"):
        build_objective(c, graphdef, CharTokenizer())
    with pytest.raises(UserError, match="rl.ref_kl was renamed rl.kl_coef"):
        validate_config(c)
    for old, new in (("inner_steps", "inner_updates"), ("eval_batch", "eval_batch_size")):
        g = grpo_config.get_config("tiny")
        g.rl[old] = 2
        with pytest.raises(UserError, match=f"rl.{old} was renamed rl.{new}"):
            validate_config(g)
    validate_config(grpo_config.get_config("tiny"))


def test_snapshots_are_built_and_refreshed_from_the_declaration(tiny):
    graphdef, params, rest = tiny
    obj = objectives.get("diffu_grpo")(graphdef, {}, mask_id=MASK)
    frozen = objectives.initial_frozen(obj, params, {"policy": rest})
    assert set(frozen) == {"policy", "old", "ref"}
    state = TrainState.create({"policy": params}, _sgd(), jax.random.key(0), frozen)
    moved = jax.tree.map(lambda x: x + 1.0, state.params["policy"])
    state = state.replace(params={"policy": moved})
    state = objectives.make_refresh_old(obj)(state)
    for a, b, r in zip(
        jax.tree.leaves(state.frozen["old"]),
        jax.tree.leaves(moved),
        jax.tree.leaves(state.frozen["ref"]),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(r, b)  # `ref` stays the start
    assert objectives.make_refresh_old(objectives.get("wd1")(graphdef, {}, mask_id=MASK)) is None


def _sgd():
    import optax

    return optax.sgd(0.1)


# The batch layout each registered objective's loss reads: masked-diffusion completions, or
# AR rows (GRPO's layout plus JEPO's [x, c, a*] masks). A new objective must be listed here.
_DIFFUSION = {"spg", "spg_elbo", "spg_no_neg", "diffu_grpo", "wd1"}
_AR = {"grpo", "rloo", "aipo", "jepo"}


def _batch(name: str) -> dict:
    b, g, p, t = 4, 6, 5, 8
    if name in _DIFFUSION:
        return {
            "prompt": jnp.ones((b, p), jnp.int32),
            "prompt_mask": jnp.ones((b, p), bool),
            "completion": jnp.ones((b, g), jnp.int32),
            "valid": jnp.ones((b, g), bool),
            "advantage": jnp.zeros((b,)),
            "row_mask": jnp.ones((b,), bool),
        }
    half = jnp.broadcast_to(jnp.arange(t) >= t // 2, (b, t))
    return {
        "tokens": jnp.ones((b, t), jnp.int32),
        "mask": jnp.ones((b, t), bool),
        "score_mask": half,
        "old_logp": jnp.zeros((b, t)),
        "adv": jnp.zeros((b,)),
        "cot_mask": half,
        "ans_mask": ~half,
        "valid": jnp.ones((b,), bool),
        "bound_w": jnp.ones((b,)),
    }


def test_every_objective_logs_only_under_its_own_namespace(tiny):
    """One namespace per method (`spg/`, `d1/`, `wd1/`, `grpo/`, `rloo/`, `aipo/`, `jepo/`): no
    loss metric under the runners' `rl/`, every plot key among the logged ones. With a KL (where
    the objective has one), so the KL metric is checked too."""
    graphdef, params, rest = tiny
    assert set(objectives.names()) == _DIFFUSION | _AR, "classify the new objective's batch"
    expect = {"diffu_grpo": "d1", "spg_elbo": "spg", "spg_no_neg": "spg"}
    for name in objectives.names():
        ns = objectives.namespace(name)
        assert ns == expect.get(name, name), name
        fields = objectives.fields(name)
        cfg = {k: v for k, v in (("group_size", 2), ("kl_coef", 0.1)) if k in fields}
        obj = objectives.get(name)(graphdef, cfg, mask_id=MASK)
        frozen = objectives.initial_frozen(obj, params, {"policy": rest})
        _, _, aux = jax.eval_shape(
            obj.loss_fn, {"policy": params}, frozen, _batch(name), jax.random.key(0)
        )
        assert aux and all(k.startswith(ns + "/") for k in aux), (name, sorted(aux))
        assert f"{ns}/kl" in aux or "kl_coef" not in fields, (name, sorted(aux))
        assert all(k in aux for k in obj.plot_keys), (name, obj.plot_keys)


def test_runners_do_not_name_objectives_or_import_the_arithmetic_task():
    import rl.run_ar
    import rl.run_spg

    for mod in (rl.run_spg, rl.run_ar):
        src = inspect.getsource(mod)
        assert "data.tasks.arithmetic" not in src, mod.__name__
        for name in objectives.names():
            assert f'== "{name}"' not in src and f'"{name}",' not in src, (mod.__name__, name)
