"""Transformer: KV-cache decoding equals recomputation, padding invariance, hidden states, names,
and the fused projections reproduce the pre-fusion model (same seed, same numbers)."""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from child_env import CHEAP_COMPILES, child_env
from flax import nnx

from models.transformer import Transformer, TransformerConfig

CFG = TransformerConfig(vocab_size=37, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48)


@functools.partial(nnx.jit, static_argnames="return_hidden")
def _fwd(m, toks, mask_bt=None, cache=None, return_hidden=False):
    """`m(toks, ...)` as one compiled program (eager calls compile every op on its own shapes,
    which cost this file most of its time)."""
    return m(toks, mask_bt=mask_bt, cache=cache, return_hidden=return_hidden)


def _model(causal=True, **kw):
    import dataclasses

    return Transformer(dataclasses.replace(CFG, causal=causal, **kw), rngs=nnx.Rngs(3))


def test_shapes_and_param_count():
    m = _model()
    out = _fwd(m, jnp.zeros((2, 5), jnp.int32), return_hidden=True)
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
    full = _fwd(m, toks).logits
    cache = m.init_cache(3, 12)
    out = _fwd(m, toks[:, :4], cache=cache)
    steps = [out.logits]
    cache = out.cache
    for i in range(4, 9):
        out = _fwd(m, toks[:, i : i + 1], cache=cache)
        cache = out.cache
        steps.append(out.logits)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_left_padding_does_not_change_real_positions(causal):
    m = _model(causal=causal)
    toks = jax.random.randint(jax.random.key(1), (1, 6), 1, 37)
    ref = _fwd(m, toks).logits
    padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), toks], 1)
    mask = jnp.concatenate([jnp.zeros((1, 3), bool), jnp.ones((1, 6), bool)], 1)
    out = _fwd(m, padded, mask_bt=mask).logits[:, 3:]
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_causal_switch():
    toks = jax.random.randint(jax.random.key(2), (1, 6), 0, 37)
    changed = toks.at[0, -1].set((toks[0, -1] + 1) % 37)
    causal, bidir = _model(True), _model(False)
    np.testing.assert_allclose(
        _fwd(causal, toks).logits[:, :-1], _fwd(causal, changed).logits[:, :-1], atol=1e-6
    )
    a, b = _fwd(bidir, toks).logits, _fwd(bidir, changed).logits
    assert not np.allclose(a[:, :-1], b[:, :-1], atol=1e-4)


def test_bf16_compute_keeps_fp32_logits():
    m = _model(dtype="bfloat16")
    out = _fwd(m, jnp.ones((1, 4), jnp.int32))
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
    oa = _fwd(m, toks, cache=m.init_cache(2, 8))
    ob = _fwd(ms, toks, cache=ms.init_cache(2, 8))
    np.testing.assert_allclose(oa.logits, ob.logits, atol=1e-5)
    assert ob.cache["layers"]["k"].shape[0] == CFG.n_layers
    pure = nnx.to_pure_dict(nnx.state(m, nnx.Param))
    back = to_unscanned(to_scanned(pure))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), back, pure))
    with pytest.raises(ValueError, match="already in the scanned layout"):
        to_scanned(to_scanned(pure))
    # Sharding metadata gains the leading `layers` axis.
    names = nnx.state(ms, nnx.Param)["blocks"]["mlp"]["w_gate_up"].get_metadata()["out_sharding"]
    assert tuple(names) == ("layers", "embed", "fused", "mlp")


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


# Outputs of the pre-fusion model (separate wq/wk/wv, w_gate/w_up, a materialised [B, T, S] mask)
# for the same seeds, written by tests/models/data/make_pre_fusion_ref.py at main @ 63c9429.
_REF = os.path.join(os.path.dirname(__file__), "data", "transformer_pre_fusion.npz")
_REF_CFG = TransformerConfig(
    vocab_size=37, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48
)
_REF_CASES = {
    "causal": dict(causal=True),
    "bidir": dict(causal=False),
    "causal_scan": dict(causal=True, scan_layers=True),
    "bidir_scan_remat": dict(causal=False, scan_layers=True, remat="full"),
    "tied_mha": dict(causal=True, n_kv_heads=4, tie_embeddings=True),
}


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(_REF))


def _ref_tree(ref, kind):
    tree = {}
    for key, v in ref.items():
        if key.startswith(f"causal/{kind}/"):
            node, path = tree, key.split("/")[2:]
            for p in path[:-1]:
                node = node.setdefault(int(p) if p.isdigit() else p, {})
            node[path[-1]] = v
    return tree


@pytest.mark.parametrize("case", list(_REF_CASES))
def test_fused_model_reproduces_pre_fusion_outputs(ref, case):
    """Same seed, same function: logits and hidden states at every position (padded rows too:
    the logit at the last left-padded position predicts the first real token) equal the
    pre-fusion model's."""
    m = Transformer(dataclasses.replace(_REF_CFG, **_REF_CASES[case]), rngs=nnx.Rngs(3))
    for name in ("left", "right"):
        mask = ref[f"mask_{name}"]
        out = _fwd(m, jnp.asarray(ref["tokens"]), mask_bt=jnp.asarray(mask), return_hidden=True)
        np.testing.assert_allclose(
            np.asarray(out.logits), ref[f"{case}/logits_{name}"], atol=2e-5, rtol=1e-5
        )
        if f"{case}/hidden_{name}" in ref:
            np.testing.assert_allclose(
                np.asarray(out.hidden), ref[f"{case}/hidden_{name}"], atol=2e-5
            )


def test_fused_params_are_the_unfused_draws_and_grads_match(ref):
    """wqkv / w_gate_up hold exactly the separate initialisers' draws; gradients agree too.

    The bitwise draws are checked in a fresh process at XLA's default optimisation level
    (default_level_check.py runs `check_fused_params_are_the_unfused_draws` below): the suite
    compiles at level 0 (tests/conftest.py), which changes the truncated-normal draws in the last
    bit, and the recorded draws were made at the default level. Gradients and the conversion of a
    pre-fusion tree are compared within float tolerance here, at the suite's level.
    """
    import subprocess
    import sys

    from models.layout import fuse_projections, split_projections

    here = os.path.dirname(os.path.abspath(__file__))
    # Only the optimisation level changes these bits; the suite's other cheap-compile flags keep
    # them (checked: 16 -> 11 CPU-s for the child with them kept).
    level = "--xla_backend_optimization_level"
    assert level in CHEAP_COMPILES
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(level)]
    out = subprocess.run(
        [sys.executable, os.path.join(here, "default_level_check.py")],
        cwd=os.path.dirname(os.path.dirname(here)),
        env=child_env(XLA_FLAGS=" ".join(flags)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert out.stdout.strip().splitlines()[-1] == "ok", out.stdout[-2000:]

    m = Transformer(_REF_CFG, rngs=nnx.Rngs(3))
    gd, params = nnx.split(m, nnx.Param)
    toks, mask = jnp.asarray(ref["tokens"]), jnp.asarray(ref["mask_left"])

    def loss(p):
        lp = jax.nn.log_softmax(nnx.merge(gd, p)(toks, mask_bt=mask).logits)[:, :-1]
        return -jnp.sum(jnp.take_along_axis(lp, toks[:, 1:, None], -1) * mask[:, 1:, None])

    g = split_projections(nnx.to_pure_dict(jax.jit(jax.grad(loss))(params)))
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(_ref_tree(ref, "grad")), strict=True):
        np.testing.assert_allclose(np.asarray(a), b, atol=2e-5, rtol=1e-4)
    # A parameter tree saved before the fusion converts and gives the pre-fusion model's logits.
    other = Transformer(_REF_CFG, rngs=nnx.Rngs(0))
    st = nnx.state(other, nnx.Param)
    nnx.replace_by_pure_dict(st, fuse_projections(_ref_tree(ref, "param")))
    nnx.update(other, st)
    got = np.asarray(_fwd(other, toks, mask_bt=mask).logits)
    np.testing.assert_allclose(got, ref["causal/logits_left"], atol=2e-5, rtol=1e-5)


def check_fused_params_are_the_unfused_draws(ref):
    """The bitwise part of the test above (run by default_level_check.py at the default level):
    the drawn parameters split into the recorded pre-fusion draws, and the recorded pre-fusion
    tree fuses into exactly the drawn parameters (so a converted checkpoint is the same model)."""
    from models.layout import fuse_projections, split_projections

    m = Transformer(_REF_CFG, rngs=nnx.Rngs(3))
    fused = nnx.to_pure_dict(nnx.state(m, nnx.Param))
    want = _ref_tree(ref, "param")
    for got, exp in ((split_projections(fused), want), (fuse_projections(want), fused)):
        assert jax.tree.structure(got) == jax.tree.structure(exp)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(exp), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bit-identical


def test_fused_kv_cache_decoding_reproduces_pre_fusion(ref):
    m = Transformer(_REF_CFG, rngs=nnx.Rngs(3))
    toks, mask = jnp.asarray(ref["tokens"]), jnp.asarray(ref["mask_left"])
    out = _fwd(m, toks[:, :4], mask_bt=mask[:, :4], cache=m.init_cache(2, 12))
    steps, cache = [out.logits], out.cache
    for i in range(4, 9):
        out = _fwd(m, toks[:, i : i + 1], cache=cache)
        cache = out.cache
        steps.append(out.logits)
    got = np.asarray(jnp.concatenate(steps, 1))
    np.testing.assert_allclose(got, ref["causal/decode_logits"], atol=2e-5)


def test_fuse_split_round_trip_in_both_layer_layouts():
    from models.layout import fuse_projections, has_unfused_projections, split_projections

    m = _model()
    pure = nnx.to_pure_dict(nnx.state(m, nnx.Param))
    for tree in (pure, _scanned_pure(pure)):
        sep = split_projections(tree)
        assert has_unfused_projections(sep) and not has_unfused_projections(tree)
        back = fuse_projections(sep)
        assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), back, tree))


def _scanned_pure(pure):
    from models.layout import to_scanned

    return to_scanned(pure)
