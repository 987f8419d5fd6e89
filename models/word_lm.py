"""Closed-vocabulary word LM with character-aware embeddings and an OOV adapter (arXiv:2305.03584).

Every word's embedding comes from its characters (Kim et al. 2016, arXiv:1508.06615): char
embeddings -> convolutions of widths 2..4 -> masked max-pool over characters -> highway ->
linear to `d_emb`. An LSTM runs over the word embeddings, its state is projected back to `d_emb`
and scored against the same char-aware table (tied input/output), so any string, including a
client's out-of-vocabulary word, has an embedding in the space the central model learned.

OOV adapter (personalisation, Sec. 2 of ../shared/papers/oov.md): a client passes `k` extra rows
`oov_emb_kd` (initialised from `embed_words` of its private words, or at random) and biases
`oov_bias_k`; ids `V .. V+k-1` then mean those words on the input side, and the output scores
`[h W_V^T + b_V ; h E_u^T + b_u]` share one softmax. Padded slots (`oov_valid_k` False) get -inf.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@dataclasses.dataclass(frozen=True)
class WordLMConfig:
    vocab_size: int
    num_chars: int = 42  # fed.data.CHARS plus the pad id 0
    max_chars: int = 12
    char_dim: int = 16
    filters: tuple[int, ...] = (32, 32, 32)  # per width below
    widths: tuple[int, ...] = (2, 3, 4)
    d_emb: int = 64
    hidden: int = 128


class VocabChars(nnx.Variable):
    """Character ids of the closed vocabulary `[V, max_chars]` (a constant, not trained)."""


class CharEncoder(nnx.Module):
    """Characters `[W, max_chars]` (0 = pad) -> word embeddings `[W, d_emb]`."""

    def __init__(self, cfg: WordLMConfig, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(cfg.num_chars, cfg.char_dim, rngs=rngs)
        # Convolutions as unfolded windows @ kernel: a plain matmul, which stays a (batched)
        # matmul under vmap over clients instead of a slow grouped convolution on CPU.
        self.convs = nnx.List(
            [
                nnx.Linear(w * cfg.char_dim, f, rngs=rngs)
                for f, w in zip(cfg.filters, cfg.widths, strict=True)
            ]
        )
        self.widths = cfg.widths
        total = sum(cfg.filters)
        self.gate = nnx.Linear(total, total, rngs=rngs)
        self.transform = nnx.Linear(total, total, rngs=rngs)
        self.out = nnx.Linear(total, cfg.d_emb, rngs=rngs)

    def __call__(self, chars_wc: jax.Array) -> jax.Array:
        x_wcd = self.embed(chars_wc)
        mask_wc = chars_wc > 0
        pooled = []
        num_c = chars_wc.shape[1]
        for conv, w in zip(self.convs, self.widths, strict=True):
            windows = jnp.concatenate([x_wcd[:, i : num_c - w + 1 + i] for i in range(w)], -1)
            y = jnp.tanh(conv(windows))  # [W, C - w + 1, F]
            # a window is real if its first character is; short words keep at least one window
            valid = mask_wc[:, : y.shape[1]]
            valid = valid.at[:, 0].set(True)
            pooled.append(jnp.max(jnp.where(valid[..., None], y, -1e9), axis=1))
        h = jnp.concatenate(pooled, -1)
        gate = jax.nn.sigmoid(self.gate(h))
        h = gate * jax.nn.relu(self.transform(h)) + (1 - gate) * h
        return self.out(h)


class LSTM(nnx.Module):
    """Single-layer LSTM over time; input projections for all steps at once, then a scan."""

    def __init__(self, d_in: int, hidden: int, *, rngs: nnx.Rngs):
        self.wx = nnx.Linear(d_in, 4 * hidden, rngs=rngs)
        self.wh = nnx.Linear(hidden, 4 * hidden, use_bias=False, rngs=rngs)
        self.hidden = hidden

    def __call__(self, x_btd: jax.Array) -> jax.Array:
        gx_tbg = jnp.swapaxes(self.wx(x_btd), 0, 1)
        b = x_btd.shape[0]
        wh = self.wh

        def cell(carry, gx_bg):
            h, c = carry
            i, f, g, o = jnp.split(gx_bg + wh(h), 4, axis=-1)
            c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((b, self.hidden), x_btd.dtype)
        _, h_tbh = jax.lax.scan(cell, (zeros, zeros), gx_tbg)
        return jnp.swapaxes(h_tbh, 0, 1)


class WordLM(nnx.Module):
    """Char-aware word LM; `__call__(tokens_bt, ...) -> logits [B, T, V (+k)]` in float32."""

    def __init__(self, cfg: WordLMConfig, vocab_chars_vc: np.ndarray, *, rngs: nnx.Rngs):
        assert vocab_chars_vc.shape == (cfg.vocab_size, cfg.max_chars), vocab_chars_vc.shape
        self.cfg = cfg
        self.vocab_chars = VocabChars(jnp.asarray(vocab_chars_vc, jnp.int32))
        self.chars = CharEncoder(cfg, rngs=rngs)
        self.lstm = LSTM(cfg.d_emb, cfg.hidden, rngs=rngs)
        self.proj = nnx.Linear(cfg.hidden, cfg.d_emb, rngs=rngs)
        self.bias = nnx.Param(jnp.zeros((cfg.vocab_size,)))

    def embed_words(self, chars_wc: jax.Array) -> jax.Array:
        """Char-aware embeddings `[W, d_emb]` of arbitrary words (the OOV adapter's init)."""
        return self.chars(chars_wc)

    def __call__(
        self,
        tokens_bt: jax.Array,
        *,
        oov_emb_kd: jax.Array | None = None,
        oov_bias_k: jax.Array | None = None,
        oov_valid_k: jax.Array | None = None,
        bias_v: jax.Array | None = None,
        table_vd: jax.Array | None = None,
    ) -> jax.Array:
        """Next-word logits.

        Args:
          tokens_bt: ids in `[0, V)`, or `[0, V + k)` when an adapter is passed.
          oov_emb_kd: adapter embeddings `[k, d_emb]` (input rows and output scores).
          oov_bias_k: adapter output biases `[k]`.
          oov_valid_k: bool `[k]`; False slots are padding and get -inf logits.
          bias_v: a client's personal copy of the vocabulary biases `[V]` (default: shared).
          table_vd: a precomputed vocabulary table `[V, d_emb]` used instead of running the char
            encoder (fed `share_char_encoder`: computed once per round, outside the clients).

        Returns:
          float32 logits `[B, T, V]` or `[B, T, V + k]`.
        """
        if table_vd is None:
            table_vd = self.chars(self.vocab_chars.value)
        bias_v = self.bias.value if bias_v is None else bias_v
        if oov_emb_kd is not None:
            table_vd = jnp.concatenate([table_vd, oov_emb_kd], 0)
            bias_v = jnp.concatenate([bias_v, oov_bias_k], 0)
        h_btd = self.proj(self.lstm(table_vd[tokens_bt]))
        logits = (h_btd @ table_vd.T + bias_v).astype(jnp.float32)
        if oov_valid_k is not None:
            valid = jnp.concatenate([jnp.ones((self.cfg.vocab_size,), bool), oov_valid_k])
            logits = jnp.where(valid, logits, -jnp.inf)
        return logits
