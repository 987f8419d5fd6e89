"""Tests for READ (models/read.py): exact start at the frozen backbone, no backbone cotangents,
the recurrence against an independent numpy reference, and the parameter-count formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.peft import AdaptedModel
from models.read import Read, cache_states, read_param_count
from models.transformer import Transformer, TransformerConfig

# Odd sizes so that no activation shape can coincide with a weight shape (see the jaxpr test).
CFG = TransformerConfig(
    vocab_size=23,
    d_model=16,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_ff=40,
    max_len=16,
    causal=False,
)
B, T = 3, 7


def _backbone(seed=0):
    return Transformer(CFG, rngs=nnx.Rngs(seed))


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, CFG.vocab_size, (B, T)).astype(np.int32)
    mask = np.ones((B, T), bool)
    mask[1, 5:] = False  # some padding
    return jnp.asarray(tokens), jnp.asarray(mask)


def _randomise(module, seed, scale=0.3):
    """Gives every parameter of `module` random values (so zero-init parts become non-zero)."""
    state = nnx.state(module, nnx.Param)
    leaves, tree = jax.tree.flatten(state)

    @jax.jit
    def draw(key):
        keys = jax.random.split(key, len(leaves))
        return [scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]

    nnx.update(module, jax.tree.unflatten(tree, draw(jax.random.key(seed))))


def _jit(fn):
    """jax.jit over modules passed as arguments (split outside, merged inside)."""

    def wrapped(*args):
        split = [nnx.split(a) if isinstance(a, nnx.Module) else (None, a) for a in args]

        @jax.jit
        def inner(states):
            return fn(*(a if g is None else nnx.merge(g, a) for (g, _), a in zip(split, states)))

        return inner([a for _, a in split])

    return wrapped


# ---------------------------------------------------------------- numpy reference of §2


def _np_rms(x, scale, eps=1e-6):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * scale


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_read(p, hidden, cell, aggregate):
    """Direct transcription of spec §2 with PyTorch cell equations, looping over layers."""
    n1, b, t, d = hidden.shape
    r = p["w_hh"].shape[0]
    h = np.zeros((b, t, r))
    c = np.zeros((b, t, r))
    hs = []
    for i in range(1, n1):
        x = _np_rms(hidden[i], p["in_scale"])
        gi = x @ p["w_ih"] + p["b_ih"]
        gh = h @ p["w_hh"] + p["b_hh"]
        if cell == "elman":
            h = np.tanh(gi + gh)
        elif cell == "gru":
            rr = _sig(gi[..., :r] + gh[..., :r])
            z = _sig(gi[..., r : 2 * r] + gh[..., r : 2 * r])
            nn_ = np.tanh(gi[..., 2 * r :] + rr * gh[..., 2 * r :])
            h = (1 - z) * nn_ + z * h
        else:
            g = gi + gh
            ig, fg, gg, og = (g[..., k * r : (k + 1) * r] for k in range(4))
            c = _sig(fg) * c + _sig(ig) * np.tanh(gg)
            h = _sig(og) * np.tanh(c)
        hs.append(h)
    g = np.mean(hs, 0) if aggregate == "mean" else hs[-1]
    return g @ p["w_out"] + p["b_out"]


@pytest.mark.parametrize("cell,aggregate", [("elman", "mean"), ("gru", "last"), ("lstm", "mean")])
def test_correction_matches_numpy_reference(cell, aggregate):
    read = Read(16, 6, cell=cell, aggregate=aggregate, rngs=nnx.Rngs(1))
    _randomise(read, 2)
    hidden = np.random.default_rng(3).normal(size=(4, 2, 5, 16)).astype(np.float32)
    got = _jit(lambda m, h: m.correction(h))(read, jnp.asarray(hidden))
    p = {k: np.asarray(v, np.float64) for k, v in nnx.to_pure_dict(nnx.state(read)).items()}
    want = _np_read(p, hidden.astype(np.float64), cell, aggregate)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_param_count_formula():
    # Spec §2: 3(rd + r^2 + 2r) + (rd + d) + d for a GRU; d=768, r=256 gives ~1.0M per stack.
    assert read_param_count(768, 256, "gru") == 986_112
    for cell in ("elman", "gru", "lstm"):
        for kw in ({}, {"learned_h0": True, "out_norm": True}):
            read = nnx.eval_shape(lambda c=cell, k=kw: Read(12, 5, cell=c, rngs=nnx.Rngs(0), **k))
            n = sum(x.size for x in jax.tree.leaves(nnx.state(read, nnx.Param)))
            assert n == read_param_count(12, 5, cell, **kw)


def test_zero_init_equals_frozen_backbone_exactly():
    backbone = _backbone()
    tokens, mask = _batch()
    read = Read(CFG.d_model, 8, rngs=nnx.Rngs(1))

    def run(backbone, read):
        out = backbone(tokens, mask_bt=mask, return_hidden=True)
        final = read(out.hidden, out.final)
        return out, final, backbone.head(final)

    out, final, logits = _jit(run)(backbone, read)
    np.testing.assert_array_equal(np.asarray(final), np.asarray(out.final))
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(out.logits))
    # The same READ with a non-zero output projection does move the state.
    _randomise(read, 4)
    _, moved, _ = _jit(run)(backbone, read)
    assert float(jnp.max(jnp.abs(moved - out.final))) > 1e-3


def test_correction_is_token_wise():
    """Each token is its own RNN sequence: changing other tokens' states leaves it unchanged."""
    read = Read(16, 6, rngs=nnx.Rngs(0))
    _randomise(read, 1)
    hidden = jax.random.normal(jax.random.key(2), (4, 2, 5, 16))
    other = hidden.at[:, :, 1:].set(jax.random.normal(jax.random.key(3), (4, 2, 4, 16)))
    d1, d2 = _jit(lambda m, h, o: (m.correction(h), m.correction(o)))(read, hidden, other)
    np.testing.assert_array_equal(np.asarray(d1[:, 0]), np.asarray(d2[:, 0]))
    assert not np.allclose(np.asarray(d1[:, 1:]), np.asarray(d2[:, 1:]))


def _read_model(seed=0):
    model = AdaptedModel(_backbone(seed), "read", 3, {"read_hidden": 8}, rngs=nnx.Rngs(1))
    _randomise(model.side, 5)  # non-zero W_out, so every READ parameter gets a gradient
    return model


def _loss_of(graphdef, tokens, mask):
    def loss(params, frozen):
        out = nnx.merge(graphdef, params, frozen)(tokens, mask)
        return jnp.sum(out**2)

    return loss


def test_backbone_gradients_are_exactly_zero():
    model = _read_model()
    tokens, mask = _batch()
    graphdef, params = nnx.split(model, nnx.Param)
    grads = jax.jit(jax.grad(lambda p: _loss_of(graphdef, tokens, mask)(p, nnx.State({}))))(params)
    g = nnx.to_pure_dict(grads)
    bb = jax.tree.leaves(g["backbone"])
    assert bb and all(not np.any(np.asarray(x)) for x in bb)
    side = jax.tree.leaves(g["side"])
    assert all(np.any(np.asarray(x)) for x in side)  # every READ parameter does get a gradient


def _dots(jaxpr) -> list[tuple[int, ...]]:
    """Output shapes of every dot_general in a jaxpr, nested jaxprs (scan bodies...) included."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append(tuple(eqn.outvars[0].aval.shape))
        for sub in jax.core.jaxprs_in_params(eqn.params):
            out += _dots(sub)
    return out


def _grad_dots(model, tokens, mask):
    """dot_generals of the gradient w.r.t. *every* parameter (backbone included)."""
    graphdef, params = nnx.split(model, nnx.Param)
    loss = _loss_of(graphdef, tokens, mask)
    return _dots(jax.make_jaxpr(jax.grad(lambda p: loss(p, nnx.State({}))))(params).jaxpr)


def _weight_shapes(backbone):
    """Backbone weight shapes as sorted dims: a fused weight's gradient dot may permute its axes."""
    return {
        tuple(sorted(x.shape))
        for x in jax.tree.leaves(nnx.state(backbone.blocks, nnx.Param))
        if x.ndim >= 2
    }


def _sorted_dims(shapes):
    return {tuple(sorted(s)) for s in shapes}


def test_gradient_jaxpr_has_no_backbone_cotangents():
    tokens, mask = _batch()
    model = _read_model()
    dots = _grad_dots(model, tokens, mask)
    # (1) No dot_general produces a backbone weight gradient.
    assert not (_sorted_dims(dots) & _weight_shapes(model.backbone))
    # (2) Exactly: backbone forward matmuls + READ-and-head forward/backward matmuls, nothing else.
    fwd = _dots(
        jax.make_jaxpr(lambda t, m: model.backbone(t, mask_bt=m, return_hidden=True))(
            tokens, mask
        ).jaxpr
    )
    hidden, final = jnp.zeros((CFG.n_layers + 1, B, T, 16)), jnp.zeros((B, T, 16))
    gd, side = nnx.split(model.side, nnx.Param)
    hgd, head = nnx.split(model.head, nnx.Param)
    side_loss = lambda p: jnp.sum(
        nnx.merge(hgd, p[1])(nnx.merge(gd, p[0])(hidden, final), mask) ** 2
    )
    side_dots = _dots(jax.make_jaxpr(jax.grad(side_loss))((side, head)).jaxpr)
    assert sorted(dots) == sorted(fwd + side_dots)


def test_jaxpr_check_detects_backbone_cotangents(monkeypatch):
    """Positive control: without stop_gradient the same check sees backbone weight gradients."""
    tokens, mask = _batch()
    model = _read_model()
    clean = _grad_dots(model, tokens, mask)
    monkeypatch.setattr(jax.lax, "stop_gradient", lambda x: x)
    leaky = _grad_dots(model, tokens, mask)
    assert _sorted_dims(leaky) & _weight_shapes(model.backbone)
    # 4 weight matrices per block (wqkv, wo, w_gate_up, w_down): a weight- and an input-gradient
    # dot each.
    assert len(leaky) > len(clean) + 2 * CFG.n_layers * 4


def test_cached_states_match_online_backbone():
    backbone = _backbone()
    tokens, mask = _batch()
    cache = cache_states(backbone, np.asarray(tokens), np.asarray(mask), batch_size=2)
    out = backbone(tokens, mask_bt=mask, return_hidden=True)
    np.testing.assert_allclose(
        cache["hidden"], np.moveaxis(np.asarray(out.hidden), 0, 1), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(cache["final"], np.asarray(out.final), rtol=1e-5, atol=1e-5)
