"""Issue 12 for SPG: the control switch (lr0 leaves parameters bitwise unchanged; shuffle keeps
each group's reward multiset), DAPO flat-group dropping, the k3 KL to the warm start, and the
powered evaluation whose sizes come from the config."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import spg as spg_config
from models.transformer import Transformer, TransformerConfig
from rl import objectives
from rl.evaluation import control_optimizer
from rl.rollout import make_rollout_fn
from train.optim import make_optimizer
from train.state import TrainState, split_module
from train.step import make_update_step

MASK, EOS = 3, 2


@functools.cache
def parts():
    cfg = TransformerConfig(
        vocab_size=12, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=32, max_len=32,
        causal=False,
    )  # fmt: skip
    return split_module(Transformer(cfg, rngs=nnx.Rngs(1)))


def batch(adv):
    comp = np.array([[7, 8, 9, 10, 2, 2], [9, 7, 7, 11, 5, 2]], np.int32)
    is_eos = comp == EOS
    return {
        "prompt": jnp.asarray(np.array([[0, 1, 5, 6]] * 2, np.int32)),
        "prompt_mask": jnp.asarray(np.array([[0, 1, 1, 1]] * 2, bool)),
        "completion": jnp.asarray(comp),
        "valid": jnp.asarray((np.cumsum(is_eos, 1) - is_eos) == 0),
        "advantage": jnp.asarray(adv, jnp.float32),
        "row_mask": jnp.ones(2, bool),
    }


def run_updates(control, n=2):
    graphdef, params, rest = parts()
    cfg = {"bound": "mix", "num_mc": 2, "mask_block_len": 4}
    loss = objectives.get("spg")(graphdef, cfg, mask_id=MASK).loss_fn
    tx = control_optimizer(
        make_optimizer({"lr": 1e-2, "warmup_steps": 0, "clip_norm": 1.0}), control
    )
    before = jax.tree.map(np.array, params)  # host copies: the update step donates the state
    state = TrainState.create(
        {"policy": jax.tree.map(jnp.array, params)}, tx, jax.random.key(0), frozen={"policy": rest}
    )
    step = make_update_step(loss, tx)
    for _ in range(n):
        state, _ = step(state, batch([1.0, -1.0]))
    return before, jax.tree.map(np.array, state.params["policy"])


def test_lr0_control_leaves_params_bitwise_unchanged():
    before, after = run_updates("lr0")
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The same loop without the control does move them (so the check above can fail).
    before, after = run_updates("none")
    assert any(
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    )


class _Tok:
    eos_id = EOS

    def decode(self, ids):
        return ",".join(map(str, ids))


class _Task:
    """Reward = the first completion token / 10, so each row's reward is known."""

    def reward(self, text, ex, compat):
        return int(text.split(",")[0]) / 10

    def reward_range(self, compat):
        return (0.0, 1.0)


def rollout_for(control, drop_flat=False, group=4):
    prompts = {"tokens": np.ones((3, 2), np.int32), "mask": np.ones((3, 2), bool)}

    def sample(params, frozen, ptok, pmask, rng):
        first = jax.random.randint(rng, (ptok.shape[0], 1), 4, 10)
        if drop_flat:  # group 0 all equal, group 1 mixed
            first = jnp.asarray([[5]] * group + [[4 + i] for i in range(group)])
        return jnp.concatenate([first, jnp.full((ptok.shape[0], 2), EOS)], axis=1)

    return make_rollout_fn(
        sample, task=_Task(), tokenizer=_Tok(), examples=[{}] * 3, prompts=prompts,
        prompts_per_step=2, group_size=group, seed=3, control=control, drop_flat_groups=drop_flat,
    )  # fmt: skip


def test_shuffle_control_keeps_group_reward_multisets():
    moved = False
    for step in range(3):
        b0, _ = rollout_for("none")(None, None, step)
        b1, _ = rollout_for("shuffle")(None, None, step)
        np.testing.assert_array_equal(b0["completion"], b1["completion"])  # same keys, same rows
        a0, a1 = b0["advantage"].reshape(-1, 4), b1["advantage"].reshape(-1, 4)
        np.testing.assert_allclose(np.sort(a0, 1), np.sort(a1, 1), atol=1e-7)
        moved |= not np.allclose(a0, a1)
    assert moved, "the shuffle never changed which completion got which advantage"


def test_drop_flat_groups_masks_equal_reward_groups():
    b, m = rollout_for("none", drop_flat=True)(None, None, 0)
    np.testing.assert_array_equal(b["row_mask"], [False] * 4 + [True] * 4)
    assert m["rl/flat_group_frac"] == 0.5
    b, _ = rollout_for("none", drop_flat=False)(None, None, 0)
    assert b["row_mask"].all()


def test_kl_is_zero_at_the_reference_and_positive_away_from_it():
    graphdef, params, rest = parts()
    cfg = {"bound": "elbo", "num_mc": 2}
    with_kl = objectives.get("spg")(graphdef, {**cfg, "kl_coef": 0.5}, mask_id=MASK)
    assert with_kl.snapshots == ("ref",)
    loss = with_kl.loss_fn
    base = objectives.get("spg")(graphdef, cfg, mask_id=MASK).loss_fn
    b, key = batch([1.0, -1.0]), jax.random.key(4)
    same = {"policy": rest, "ref": params}
    ls, _, aux = loss({"policy": params}, same, b, key)
    ls0, _, _ = base({"policy": params}, same, b, key)
    assert abs(float(aux["spg/kl"])) < 1e-6 and np.isclose(float(ls), float(ls0), atol=1e-5)
    far = jax.tree.map(lambda x: x + 0.3 * jnp.sign(x), params)
    ls, _, aux = loss({"policy": params}, {"policy": rest, "ref": far}, b, key)
    assert float(aux["spg/kl"]) > 1e-3 and float(ls) > float(ls0)


def test_evaluation_sizes_are_config_fields():
    from rl.spg_eval import make_eval_fn
    from train.sft import make_task_and_tokenizer

    assert spg_config.get_config().rl.num_eval >= 512
    c = spg_config.get_config("tiny")
    c.rl.update(num_eval=7, eval_samples=3, num_eval_seen=5, eval_batch_size=4)
    task, tok = make_task_and_tokenizer(c)

    def sampler_of(gen_len, steps, temperature):
        return lambda p, f, ptok, pmask, rng: jnp.full((ptok.shape[0], gen_len), tok.eos_id)

    metrics, scores = make_eval_fn(c, task, tok, sampler_of)(None, None)
    g = c.rl.gen_len
    assert scores[f"test/accuracy@{g}"].shape == (7,)
    assert scores["test/sampled_accuracy"].shape == (7, 3)
    assert scores[f"seen/accuracy@{g}"].shape == (5,)
    assert f"eval_seen/accuracy@{g}" in metrics


def test_d1_loss_is_normalised_by_the_batch_token_count():
    """Issue 15.4: d1 divides sum(loss * mask) by sum(mask) over the micro-batch. With the old
    policy equal to the current one and no KL, each token's loss is -A, so rows of 5 and 6 valid
    tokens with A = +1, -1 give (-5 + 6) / 11; a mean of per-row means would give 0."""
    graphdef, params, rest = parts()
    b, key = batch([1.0, -1.0]), jax.random.key(0)
    for norm, want in (("token", 1.0 / 11.0), ("sequence", 0.0)):
        cfg = {"kl_coef": 0.0, "norm": norm}
        loss = objectives.get("diffu_grpo")(graphdef, cfg, mask_id=MASK).loss_fn
        ls, den, _ = loss({"policy": params}, {"policy": rest}, b, key)
        assert np.isclose(float(ls / den), want, atol=1e-6), (norm, float(ls / den))
    default = objectives.get("diffu_grpo")(graphdef, {"kl_coef": 0.0}, mask_id=MASK).loss_fn
    ls, den, _ = default({"policy": params}, {"policy": rest}, b, key)
    assert np.isclose(float(ls / den), 1.0 / 11.0, atol=1e-6)
