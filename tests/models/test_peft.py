"""Tests for the PEFT baselines (models/peft.py): zero-initialised surgeries start at the backbone,
trainable-parameter counts match closed forms, LoRA merges W + AB*alpha/r, and the trainable
filters select exactly what each method trains."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models import peft
from models.read import read_param_count
from models.transformer import Transformer, TransformerConfig

CFG = TransformerConfig(
    vocab_size=19,
    d_model=16,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_ff=24,
    max_len=16,
    causal=False,
)
HP = {"lora_rank": 2, "adapter_dim": 3, "prompt_len": 2, "ladder_dim": 4, "read_hidden": 5}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(5, CFG.vocab_size, (2, 6)), jnp.int32)
    mask = jnp.asarray([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
    return tokens, mask


def _model(method, **hp):
    return peft.AdaptedModel(
        Transformer(CFG, rngs=nnx.Rngs(0)), method, 3, {**HP, **hp}, rngs=nnx.Rngs(1)
    )


@pytest.mark.parametrize("method", [m for m in peft.METHODS if m != "prompt"])
def test_methods_start_at_the_backbone(method, batch):
    tokens, mask = batch
    model = _model(method)
    base = Transformer(CFG, rngs=nnx.Rngs(0))
    gm, sm = nnx.split(model)
    gb, sb = nnx.split(base)
    got, want = jax.jit(
        lambda sm, sb: (
            nnx.merge(gm, sm)(tokens, mask),
            nnx.merge(gm, sm).head(nnx.merge(gb, sb)(tokens, mask_bt=mask).final, mask),
        )
    )(sm, sb)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_trainable_counts_match_closed_forms():
    d, f, n, head = CFG.d_model, CFG.d_ff, CFG.n_layers, CFG.d_model * 3 + 3
    total = CFG.num_params()
    hd, h, k = CFG.head_dim, CFG.n_heads, CFG.n_kv_heads
    want = {
        "full": total + head,
        "head": head,
        "bitfit": 2 * (2 * n + 1) * d + head,  # shifts + norm gains
        "lora": n * 2 * (d + h * hd + d + k * hd) + head,  # r=2 on wq (d->h*hd), wv (d->k*hd)
        "adapter": n * 2 * (2 * d * 3 + 3 + d) + head,
        "prompt": 2 * d + head,
        "ladder": (n + 1) * d * 4 + n + n * 2 * 4 * 8 + 4 * d + head,
        "read": read_param_count(d, 5, "gru") + head,
    }
    for method, n_train in want.items():
        model = nnx.eval_shape(lambda m=method: _model(m))
        assert peft.count_trainable(model)["trainable"] == n_train, method
    assert f == 24  # closed forms above assume the MLP is not a LoRA target


def test_lora_weight_is_merged_low_rank_update():
    from models.transformer import split_qkv

    model = _model("lora", lora_alpha=4.0)
    w = model.backbone.blocks[0].attn.wqkv  # LoRA on the wq and wv slices of the fused weight
    assert w.parts == ("wq", "wv")
    a = jax.random.normal(jax.random.key(0), w.wq.lora_a.shape)
    b = jax.random.normal(jax.random.key(1), w.wq.lora_b.shape)
    w.wq.lora_a[...] = a
    w.wq.lora_b[...] = b
    base_q, base_k, base_v = split_qkv(np.asarray(w.base[...]))
    got_q, got_k, got_v = split_qkv(np.asarray(w[...]))
    want = base_q + (np.asarray(a) @ np.asarray(b) * 4.0 / 2).reshape(base_q.shape)
    np.testing.assert_allclose(got_q, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got_k, base_k)
    np.testing.assert_array_equal(got_v, base_v)  # B = 0 at init
    assert isinstance(w.wq.lora_a, nnx.LoRAParam)


@pytest.mark.parametrize("method", peft.METHODS)
def test_filter_splits_trainable_from_frozen(method):
    model = _model(method)
    _, train, frozen = peft.split_trainable(model)
    paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(train)}
    assert any(p.startswith("head/") for p in paths)
    if method == "full":
        assert not jax.tree.leaves(nnx.state(model, nnx.Param).filter(nnx.Not(nnx.Param)))
        assert all(not isinstance(v, nnx.Param) for _, v in nnx.to_flat_state(frozen))
    else:
        # Every original backbone weight stays frozen.
        frozen_paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(frozen)}
        assert any("blocks/0/mlp" in p and "w_down" in p for p in frozen_paths)
        assert not any("w_down" in p or p.endswith("/base") for p in paths)


def test_prompt_tuning_prepends_trainable_embeddings(batch):
    tokens, mask = batch
    graphdef, state = nnx.split(_model("prompt"))
    run = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t, mask))
    out = run(state, tokens)
    # The output only depends on the prompt through attention: changing it changes the output.
    moved = nnx.State({**state, "prompt": jax.tree.map(lambda x: x + 1.0, state["prompt"])})
    assert float(jnp.max(jnp.abs(run(moved, tokens) - out))) > 1e-4
    # Padding stays padding: tokens behind the mask do not change the result.
    tokens2 = tokens.at[1, 4:].set(7)
    np.testing.assert_allclose(
        np.asarray(run(state, tokens2)), np.asarray(out), rtol=1e-5, atol=1e-6
    )


def test_frozen_states_methods_give_zero_backbone_grads(batch):
    tokens, mask = batch
    for method in ("head", "ladder"):
        model = _model(method)
        graphdef, params = nnx.split(model, nnx.Param)
        loss = lambda p, gd=graphdef: jnp.sum(nnx.merge(gd, p)(tokens, mask) ** 2)
        g = nnx.to_pure_dict(jax.jit(jax.grad(loss))(params))
        assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(g["backbone"])), method
        assert any(np.any(np.asarray(x)) for x in jax.tree.leaves(g["head"])), method


def test_unknown_method_and_lora_target_raise():
    with pytest.raises(ValueError, match="unknown method"):
        _model("prefix")
    with pytest.raises(ValueError, match="unknown LoRA target"):
        _model("lora", lora_targets=("wz",))


@pytest.mark.parametrize("method", ["lora", "bitfit", "read"])
def test_optax_labels_mask_matches_filter(method):
    model = nnx.eval_shape(lambda: _model(method))
    labels = peft.optax_labels(model)
    params = nnx.state(model, nnx.Param)
    sizes = jax.tree.leaves(jax.tree.map(lambda x: x.size, params))
    flags = jax.tree.leaves(labels)
    assert len(sizes) == len(flags) and set(flags) == {"trainable", "frozen"}
    n = sum(s for s, f in zip(sizes, flags, strict=True) if f == "trainable")
    assert n == peft.count_trainable(model)["trainable"]
