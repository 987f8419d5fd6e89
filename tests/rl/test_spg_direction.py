"""Direction and plumbing checks for SPG (arXiv:2510.09541): one plain-SGD SPG step raises the
many-sample ELBO of a positive-advantage completion and lowers it for a negative one; and the
rollout keeps prompts, examples, decoded completions, rewards and advantages aligned row by row
(left-padded prompts, prompts repeated g times in consecutive groups)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from data import tasks
from data.pipeline import encode_prompts
from data.tokenizer import CharTokenizer
from models.transformer import Transformer, TransformerConfig
from rl import likelihood as lk
from rl import objectives
from rl.rollout import make_rollout_fn
from train.state import split_module

MASK, EOS = 3, 2


@functools.cache
def parts():
    cfg = TransformerConfig(
        vocab_size=12, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=32, max_len=32,
        causal=False,
    )  # fmt: skip
    return split_module(Transformer(cfg, rngs=nnx.Rngs(1)))


def batch(adv):
    """Two completions of one prompt (left-padded by one token)."""
    prompt = np.array([[0, 1, 5, 6], [0, 1, 5, 6]], np.int32)
    comp = np.array([[7, 8, 9, 10, 2, 2], [9, 7, 7, 11, 5, 2]], np.int32)
    is_eos = comp == EOS
    return {
        "prompt": jnp.asarray(prompt),
        "prompt_mask": jnp.asarray(prompt != 0),
        "completion": jnp.asarray(comp),
        "valid": jnp.asarray((np.cumsum(is_eos, 1) - is_eos) == 0),
        "advantage": jnp.asarray(adv, jnp.float32),
        "row_mask": jnp.ones(2, bool),
    }


def elbo_many(params, rest, b, n=512):
    """ELBO [B] with n random-mode mask samples (fixed key: common random numbers)."""
    return np.asarray(_elbo_fn(n)(params, rest, b))


@functools.cache
def _elbo_fn(n):
    """`elbo_many`'s computation as one compiled program (eagerly, every op compiles apart)."""
    graphdef = parts()[0]

    @jax.jit
    def fn(params, rest, b):
        model = nnx.merge(graphdef, params, rest)
        draw = lk.draw_masks(
            jax.random.key(123), b["valid"], b["prompt_mask"], num_samples=n, mode="random",
            p_mask_prompt=0.0,
        )  # fmt: skip
        ll = lk.completion_logps(model, b["prompt"], b["prompt_mask"], b["completion"], draw, MASK)
        return lk.elbo(ll, draw.scored, draw.weight)

    return fn


@pytest.mark.parametrize("bound", ["mix", "elbo"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_one_sgd_step_moves_likelihood_with_advantage(bound, sign):
    graphdef, params, rest = parts()
    cfg = dict(bound=bound, num_mc=8, mask_block_len=4, p_mask_prompt=0.0)
    loss_fn = objectives.get("spg")(graphdef, cfg, mask_id=MASK).loss_fn
    b = batch([sign, 0.0])  # row 1 has zero advantage: it must not matter

    def f(p):
        ls, d, _ = loss_fn({"policy": p}, {"policy": rest}, b, jax.random.key(7))
        return ls / d

    g = jax.jit(jax.grad(f))(params)
    tx = optax.sgd(0.05)
    upd, _ = tx.update(g, tx.init(params), params)
    new = optax.apply_updates(params, upd)
    before, after = elbo_many(params, rest, b), elbo_many(new, rest, b)
    delta = after[0] - before[0]
    assert sign * delta > 1e-3, (before, after)


def test_rollout_rows_are_aligned():
    task, tok = tasks.get("sudoku4"), CharTokenizer()
    exs = task.generate("train", 12, 3)
    # Left padding of varying width: prompt length exceeds every encoded prompt.
    prompts = encode_prompts(exs, task, tok, 30, "compact")
    assert not prompts["mask"][:, 0].any()
    solution_of = {ex["puzzle"]: ex["solution"] for ex in exs}
    g, gen_len = 3, 24

    def fake_sampler(params, frozen, prompt_bp, prompt_mask_bp, rng):
        # Row j of a group answers with j wrong digits, read from its own prompt tokens.
        out = np.full((prompt_bp.shape[0], gen_len), EOS, np.int32)
        for r, (row, m) in enumerate(zip(np.asarray(prompt_bp), np.asarray(prompt_mask_bp))):
            puzzle = tok.decode(row[m].tolist()).split()[1]
            sol = list(solution_of[puzzle])
            blanks = [i for i, c in enumerate(puzzle) if c == "0"]
            for i in blanks[: r % g]:
                sol[i] = "1" if sol[i] != "1" else "2"
            out[r, :16] = tok.encode("".join(sol))
        return jnp.asarray(out)

    roll = make_rollout_fn(
        fake_sampler, task=task, tokenizer=tok, examples=exs, prompts=prompts,
        prompts_per_step=4, group_size=g, seed=0,
    )  # fmt: skip
    b, metrics = roll(None, None, 1)
    adv = b["advantage"].reshape(-1, g)
    # Within each group, more wrong digits -> strictly lower advantage, and they sum to zero.
    assert np.all(np.diff(adv, axis=1) < 0), adv
    np.testing.assert_allclose(adv.sum(1), 0.0, atol=1e-6)
    # Prompts are repeated g times consecutively; completion lengths are 16 digits + EOS.
    p = b["prompt"].reshape(-1, g, 30)
    assert np.all(p == p[:, :1])
    np.testing.assert_array_equal(b["valid"].sum(1), 17)
    assert metrics["rl/accuracy"] == pytest.approx(1.0 / g)
