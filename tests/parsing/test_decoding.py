"""Decoders always yield well-formed trees; leaf bookkeeping; featurisation round trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.treepiece import get_config
from parsing import experiment as E
from parsing import features as F
from parsing.grammar import unit_allowed, unit_push
from parsing.systems import leaf_index
from parsing.tree import TopParseError, parse_top, skeleton
from parsing.treepiece import NEED_INTENT, NEED_SLOT
from train.state import split_module


@pytest.fixture(scope="module")
def prep():
    c = get_config("tiny")
    return c, E.prepare(c)


def test_token_targets_round_trip(prep):
    c, p = prep
    for ex in p["splits"]["train"][:200]:
        a = F.token_actions(ex, p["vocab"])
        assert F.actions_to_top(a, list(ex.tokens), p["vocab"]) == F.gold(ex)


def test_unit_targets_round_trip(prep):
    c, p = prep
    exs = p["splits"]["train"][:200]
    units, spans, ok = F.unit_targets(exs, p["tp"], 16, 8)
    assert ok.all()
    for i, ex in enumerate(exs):
        assert F.units_to_top(
            units[i], spans[i, :, 0], spans[i, :, 1], list(ex.tokens), p["tp"]
        ) == F.gold(ex)


def test_leaf_index_golden():
    tables = {"n_leaves": jnp.array([2, 0, 1])}
    units = jnp.array([[0, 1, 2, -1], [1, 2, 2, 0]])
    step, j, valid = leaf_index(tables, units, 5)
    np.testing.assert_array_equal(valid, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(np.where(valid, step, -1), [[0, 0, 2, -1, -1], [1, 2, 3, 3, -1]])
    np.testing.assert_array_equal(np.where(valid, j, -1), [[0, 1, 0, -1, -1], [0, 0, 0, 1, -1]])


def _random_unit_decode(tables, logits_tbv, max_leaves):
    """The unit loop of the TreePiece decoder with arbitrary logits instead of a network."""
    t_max, b = logits_tbv.shape[:2]
    k = tables["site_types"].shape[1] * t_max

    @jax.jit
    def step(stack, sp, leaves, done, logits, remaining):
        ok = unit_allowed(tables, stack, sp, jnp.full((b,), remaining), max_leaves - leaves)
        u = jnp.argmax(jnp.where(ok, logits, -jnp.inf), -1)
        active = ~done
        stack, sp = unit_push(tables, stack, sp, u, active)
        leaves = leaves + jnp.where(active, tables["n_leaves"][u], 0)
        return stack, sp, leaves, done | (sp == 0), jnp.where(active, u, -1), ok.any(-1) | done

    stack = jnp.full((b, k), NEED_INTENT, jnp.int32)
    sp, leaves, done = jnp.ones(b, jnp.int32), jnp.zeros(b, jnp.int32), jnp.zeros(b, bool)
    out = []
    for t in range(t_max):
        stack, sp, leaves, done, u, live_ok = step(
            stack, sp, leaves, done, logits_tbv[t], t_max - t - 1
        )
        assert bool(jnp.all(live_ok)), "a live row has no legal unit"
        out.append(u)
    return np.stack(out, 1), np.asarray(done), np.asarray(leaves)


@pytest.mark.parametrize("t_max, max_leaves", [(16, 8), (5, 3), (3, 1)])
def test_unit_grammar_always_completes(prep, t_max, max_leaves):
    _, p = prep
    tables = jax.tree.map(jnp.asarray, p["tables"])
    logits = jax.random.normal(jax.random.key(t_max), (t_max, 64, len(p["tp"].units))) * 3
    units, done, leaves = _random_unit_decode(tables, logits, max_leaves)
    assert done.all() and (leaves <= max_leaves).all()
    for row in units:
        skel, perm = p["tp"].decode([u for u in row if u >= 0])  # raises if ill-typed/open
        assert sorted(perm) == list(range(len(perm)))


@pytest.mark.parametrize("length", [2, 7, 40])
def test_token_grammar_always_well_formed(prep, length):
    _, p = prep
    g = p["vocab"].grammar(depth=4)
    b, s = 64, 6
    src_mask = jnp.arange(s)[None] < jnp.tile(jnp.array([[3], [6]]), (b // 2, 1))
    logits = jax.random.normal(jax.random.key(length), (length, b, g.n_cls + s)) * 3

    @jax.jit
    def step(st, logits_t, remaining):
        ok = g.allowed(st, jnp.full((b,), remaining), src_mask)
        a = jnp.argmax(jnp.where(ok, logits_t, -jnp.inf), -1)
        active = ~g.done(st)
        return g.step(st, a, active), jnp.where(active, a, -1), ok.any(-1) | ~active

    st, out = g.init(b), []
    for t in range(length):
        st, a, live_ok = step(st, logits[t], length - t - 1)
        assert bool(jnp.all(live_ok))
        out.append(a)
    assert bool(jnp.all(g.done(st)))
    toks = [f"w{i}" for i in range(s)]
    for i, row in enumerate(np.stack(out, 1)):
        top = F.actions_to_top([a for a in row if a >= 0], toks, p["vocab"])
        parse_top(top)  # well-formed TOP
        assert "<pad>" not in top and (i % 2 == 1 or "w4" not in top)


@pytest.mark.slow  # compiles the full decoder (~10 s CPU, over a minute on a loaded machine)
def test_treepiece_decoder_well_formed_untrained(prep):
    """Random (untrained) parameters: outputs are still complete trees with legal, ordered spans."""
    c, p = prep
    model, _, decode = E.build(c, p)
    _, params, frozen = split_module(model)
    exs = p["splits"]["test"][:32]
    src, mask = F.source(exs, p["vocab"], c.model.max_src)
    for seed in range(3):
        params = jax.tree.map(
            lambda x, s=seed: x + 0.5 * jax.random.normal(jax.random.key(s), x.shape), params
        )
        out = jax.device_get(decode({"parser": params}, {"parser": frozen}, src, mask))
        lv = out["leaf_valid"]
        n = mask.sum(1)[:, None]
        assert np.all(~lv | ((out["start"] <= out["end"]) & (out["end"] < n)))
        for i, ex in enumerate(exs):
            top = F.units_to_top(
                out["units"][i], out["start"][i], out["end"][i], list(ex.tokens), p["tp"]
            )
            tree = parse_top(top)
            assert len(skeleton(tree)[1]) == lv[i].sum()
            # spans follow their placeholders left to right without overlapping (issue 15.8)
            _, perm = p["tp"].decode([u for u in out["units"][i] if u >= 0])
            spans = [(out["start"][i][k], out["end"][i][k]) for k in perm]
            assert all(a[1] < b[0] for a, b in zip(spans, spans[1:])), spans


def test_malformed_prediction_detected():
    with pytest.raises(TopParseError):
        parse_top("[IN:A [SL:B x ]")


def _unit_allowed_reference(tables, stack_bk, sp_b, remaining_b, leaves_left_b):
    """The grammar mask as computed before it became a table lookup (issue 19 item 3)."""
    k = stack_bk.shape[1]
    top = jnp.take_along_axis(stack_bk, jnp.maximum(sp_b - 1, 0)[:, None], 1)[:, 0]
    fits = tables["grammar"][top]
    live = jnp.arange(k)[None, :] < sp_b[:, None]
    n_slot = jnp.sum(live & (stack_bk == NEED_SLOT), 1) - (top == NEED_SLOT)
    n_int = jnp.sum(live & (stack_bk == NEED_INTENT), 1) - (top == NEED_INTENT)
    kk = jnp.arange(tables["site_types"].shape[1])[None, :] < tables["n_sites"][:, None]
    u_slot = jnp.sum(kk & (tables["site_types"] == NEED_SLOT), 1)
    u_int = tables["n_sites"] - u_slot
    slot_after = n_slot[:, None] + u_slot[None, :]
    leaves_after = leaves_left_b[:, None] - tables["n_leaves"][None, :]
    cost = n_int[:, None] + u_int[None, :] + slot_after + jnp.maximum(slot_after - leaves_after, 0)
    open_after = sp_b[:, None] - 1 + tables["n_sites"][None, :]
    return fits & (leaves_after >= 0) & (cost <= remaining_b[:, None]) & (open_after <= k)


def test_unit_mask_lookup_equals_the_direct_computation(prep):
    _, p = prep
    tables = jax.tree.map(jnp.asarray, p["tables"])
    rng = np.random.default_rng(0)
    b, k = 512, 12
    stack = jnp.asarray(rng.integers(0, 2, (b, k)), jnp.int32)
    sp = jnp.asarray(rng.integers(0, k + 1, b), jnp.int32)
    remaining = jnp.asarray(rng.integers(-2, 20, b), jnp.int32)
    leaves = jnp.asarray(rng.integers(-1, 10, b), jnp.int32)
    got = unit_allowed(tables, stack, sp, remaining, leaves)
    want = _unit_allowed_reference(tables, stack, sp, remaining, leaves)
    np.testing.assert_array_equal(got, want)
    assert 0 < int(want.sum()) < want.size  # the random states exercise both outcomes
