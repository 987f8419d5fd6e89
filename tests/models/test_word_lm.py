"""Tests for models/word_lm.py: char encoder padding, tied OOV adapter rows, -inf padded slots."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fed import data
from models.word_lm import WordLM, WordLMConfig

VOCAB = list(data.SPECIALS) + ["the", "call", "alra", "meet", "code"]


def _model(max_chars=12):
    cfg = WordLMConfig(
        vocab_size=len(VOCAB),
        max_chars=max_chars,
        char_dim=8,
        filters=(4, 4, 4),
        d_emb=8,
        hidden=8,
    )
    return WordLM(cfg, data.chars_of(VOCAB, max_chars), rngs=nnx.Rngs(0))


def test_shapes_and_dtype():
    m = _model()
    logits = m(jnp.array([[2, 4, 5, 0]]))
    assert logits.shape == (1, 4, len(VOCAB)) and logits.dtype == jnp.float32


def test_char_encoder_ignores_padding_length():
    a, b = _model(12), _model(8)
    nnx.update(b, nnx.state(a, nnx.Param))  # same weights, different char padding
    e12 = a.embed_words(jnp.asarray(data.chars_of(["alra", "ab"], 12)))
    e8 = b.embed_words(jnp.asarray(data.chars_of(["alra", "ab"], 8)))
    np.testing.assert_allclose(e12, e8, rtol=1e-5, atol=1e-6)


def test_adapter_row_from_char_encoder_ties_to_the_same_word():
    # An adapter row built from the chars of vocabulary word j, with j's bias, must score exactly
    # like j and, on the input side, embed exactly like j.
    m = _model()
    j = VOCAB.index("alra")
    emb = m.embed_words(jnp.asarray(data.chars_of(["alra", "zzz"], 12)))
    bias = jnp.stack([m.bias.value[j], 0.0])
    valid = jnp.array([True, False])
    tok = jnp.array([[2, 5, 6]])
    tok_oov = jnp.array([[2, 5, len(VOCAB)]])  # "alra" replaced by its adapter id
    out = m(tok, oov_emb_kd=emb, oov_bias_k=bias, oov_valid_k=valid)
    out_oov = m(tok_oov, oov_emb_kd=emb, oov_bias_k=bias, oov_valid_k=valid)
    assert out.shape == (1, 3, len(VOCAB) + 2)
    np.testing.assert_allclose(out[..., len(VOCAB)], out[..., j], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out, out_oov, rtol=1e-5, atol=1e-5)
    # base-vocabulary logits do not change when an adapter is attached
    np.testing.assert_allclose(out[..., : len(VOCAB)], m(tok), rtol=1e-5, atol=1e-5)


def test_padded_oov_slots_are_minus_inf_and_get_no_probability():
    m = _model()
    emb = jax.random.normal(jax.random.key(0), (3, 8))
    valid = jnp.array([True, False, False])
    out = m(jnp.array([[2, 5]]), oov_emb_kd=emb, oov_bias_k=jnp.zeros(3), oov_valid_k=valid)
    v = len(VOCAB)
    assert np.all(np.isneginf(out[..., v + 1 :])) and np.all(np.isfinite(out[..., : v + 1]))
    p = jax.nn.softmax(out, -1)
    np.testing.assert_allclose(jnp.sum(p, -1), 1.0, rtol=1e-6)
    assert float(jnp.max(p[..., v + 1 :])) == 0.0
