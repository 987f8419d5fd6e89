"""Transformer: KV-cache decoding equals recomputation, padding invariance, hidden states, names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.transformer import Transformer, TransformerConfig

CFG = TransformerConfig(vocab_size=37, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48)


def _model(causal=True, **kw):
    import dataclasses

    return Transformer(dataclasses.replace(CFG, causal=causal, **kw), rngs=nnx.Rngs(3))


def test_shapes_and_param_count():
    m = _model()
    out = m(jnp.zeros((2, 5), jnp.int32), return_hidden=True)
    assert out.logits.shape == (2, 5, 37) and out.logits.dtype == jnp.float32
    assert out.hidden.shape == (3, 2, 5, 32) and out.final.shape == (2, 5, 32)
    n = sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
    assert n == CFG.num_params()


def test_every_param_has_logical_names():
    m = _model()
    for path, var in nnx.to_flat_state(nnx.state(m, nnx.Param)):
        names = var.get_metadata().get("out_sharding")
        assert names is not None and len(names) == var.get_value().ndim, path


def test_kv_cache_matches_full_recompute():
    m = _model()
    toks = jax.random.randint(jax.random.key(0), (3, 9), 0, 37)
    full = m(toks).logits
    cache = m.init_cache(3, 12)
    out = m(toks[:, :4], cache=cache)
    steps = [out.logits]
    cache = out.cache
    for i in range(4, 9):
        out = m(toks[:, i : i + 1], cache=cache)
        cache = out.cache
        steps.append(out.logits)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_left_padding_does_not_change_real_positions(causal):
    m = _model(causal=causal)
    toks = jax.random.randint(jax.random.key(1), (1, 6), 1, 37)
    ref = m(toks).logits
    padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), toks], 1)
    mask = jnp.concatenate([jnp.zeros((1, 3), bool), jnp.ones((1, 6), bool)], 1)
    out = m(padded, mask_bt=mask).logits[:, 3:]
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_causal_switch():
    toks = jax.random.randint(jax.random.key(2), (1, 6), 0, 37)
    changed = toks.at[0, -1].set((toks[0, -1] + 1) % 37)
    causal, bidir = _model(True), _model(False)
    np.testing.assert_allclose(
        causal(toks).logits[:, :-1], causal(changed).logits[:, :-1], atol=1e-6
    )
    assert not np.allclose(bidir(toks).logits[:, :-1], bidir(changed).logits[:, :-1], atol=1e-4)


def test_bf16_compute_keeps_fp32_logits():
    m = _model(dtype="bfloat16")
    out = m(jnp.ones((1, 4), jnp.int32))
    assert out.logits.dtype == jnp.float32 and out.final.dtype == jnp.bfloat16
    assert np.isfinite(np.asarray(out.logits)).all()


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="n_heads"):
        TransformerConfig(vocab_size=5, d_model=30, n_heads=4)


def _scanned_copy(m, **kw):
    """A scan_layers model holding `m`'s parameters (converted with `to_scanned`)."""
    import dataclasses

    from models.layout import to_scanned

    ms = Transformer(dataclasses.replace(m.cfg, scan_layers=True, **kw), rngs=nnx.Rngs(9))
    st = nnx.state(ms, nnx.Param)
    nnx.replace_by_pure_dict(st, to_scanned(nnx.to_pure_dict(nnx.state(m, nnx.Param))))
    nnx.update(ms, st)
    return ms


@pytest.mark.parametrize("remat", ["none", pytest.param("full", marks=pytest.mark.slow)])
def test_scanned_equals_unscanned_outputs_and_grads(remat):
    from models.layout import to_unscanned

    m = _model()
    ms = _scanned_copy(m, remat=remat)
    toks = jax.random.randint(jax.random.key(1), (2, 7), 0, 37)

    @jax.jit
    def loss_and_grad(params, gd):
        def f(p):
            out = nnx.merge(gd, p)(toks, return_hidden=True)
            lp = jax.nn.log_softmax(out.logits)[:, :-1]
            return -jnp.mean(jnp.take_along_axis(lp, toks[:, 1:, None], -1)), out.hidden

        return jax.value_and_grad(f, has_aux=True)(params)

    (la, ha), ga = loss_and_grad(*reversed(nnx.split(m)))
    (lb, hb), gb = loss_and_grad(*reversed(nnx.split(ms)))
    np.testing.assert_allclose(la, lb, rtol=1e-6)
    np.testing.assert_allclose(ha, hb, atol=1e-5)
    ga, gb = nnx.to_pure_dict(ga), to_unscanned(nnx.to_pure_dict(gb))
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_scanned_kv_cache_and_round_trip():
    from models.layout import to_scanned, to_unscanned

    m = _model()
    ms = _scanned_copy(m)
    toks = jax.random.randint(jax.random.key(2), (2, 6), 0, 37)
    oa = m(toks, cache=m.init_cache(2, 8))
    ob = ms(toks, cache=ms.init_cache(2, 8))
    np.testing.assert_allclose(oa.logits, ob.logits, atol=1e-5)
    assert ob.cache["layers"]["k"].shape[0] == CFG.n_layers
    pure = nnx.to_pure_dict(nnx.state(m, nnx.Param))
    back = to_unscanned(to_scanned(pure))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), back, pure))
    with pytest.raises(ValueError, match="already in the scanned layout"):
        to_scanned(to_scanned(pure))
    # Sharding metadata gains the leading `layers` axis.
    names = nnx.state(ms, nnx.Param)["blocks"]["mlp"]["w_gate"].get_metadata()["out_sharding"]
    assert tuple(names) == ("layers", "embed", "mlp")


def test_remat_keeps_unscanned_grads_and_bad_policy_is_named():
    import dataclasses

    m = _model()
    mr = _model(remat="dots")
    toks = jax.random.randint(jax.random.key(3), (2, 5), 0, 37)

    def grad(model):
        gd, p = nnx.split(model)
        return jax.jit(jax.grad(lambda p: jnp.sum(nnx.merge(gd, p)(toks).logits ** 2)))(p)

    for a, b in zip(jax.tree.leaves(grad(m)), jax.tree.leaves(grad(mr)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="remat"):
        dataclasses.replace(CFG, remat="sometimes")
