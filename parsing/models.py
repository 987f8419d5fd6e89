"""Encoder-decoder parsers (Flax NNX) for TreePiece (arXiv:2303.17161, Sec. 3) and two baselines.

All three share the encoder: the codebase ``models.transformer.Transformer`` with ``causal=False``
(its final-normed states ``final`` are the memory). Decoders are small pre-norm transformer stacks
with cross-attention (``jax.nn.dot_product_attention``) and a per-layer KV cache for AR decoding.

* ``TreePieceParser``: AR decoder over TreePiece units, then every slot leaf predicts its span
  [start, end] in parallel with pointer heads over the encoder states.
* ``ARParser``: token-level AR decoder over brackets/labels plus a copy pointer over utterance
  positions (one bracket, label or word per step).
* ``NARParser``: length prediction from the pooled encoder, then all positions at once
  (Babu et al., 2021 style), sharing the token/pointer output space of ``ARParser``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from models.transformer import RMSNorm, Transformer, TransformerConfig


def _dense(rngs, d_in, d_out):
    return nnx.Linear(d_in, d_out, use_bias=False, rngs=rngs)


class _Attn(nnx.Module):
    def __init__(self, d, n_heads, *, rngs):
        self.h = n_heads
        self.q, self.k, self.v, self.o = (_dense(rngs, d, d) for _ in range(4))

    def heads(self, x, w):
        b, t, d = x.shape
        return w(x).reshape(b, t, self.h, d // self.h)

    def kv(self, mem_bsd):
        return self.heads(mem_bsd, self.k), self.heads(mem_bsd, self.v)

    def attend(self, x_btd, k, v, mask_bts):
        out = jax.nn.dot_product_attention(self.heads(x_btd, self.q), k, v, mask=mask_bts[:, None])
        return self.o(out.reshape(x_btd.shape))


class DecoderBlock(nnx.Module):
    """Pre-norm self-attention, cross-attention and GELU MLP."""

    def __init__(self, d, n_heads, d_ff, *, rngs):
        self.n1, self.n2, self.n3 = (RMSNorm(d, 1e-6, jnp.float32, rngs=rngs) for _ in range(3))
        self.self_attn = _Attn(d, n_heads, rngs=rngs)
        self.cross_attn = _Attn(d, n_heads, rngs=rngs)
        self.up, self.down = _dense(rngs, d, d_ff), _dense(rngs, d_ff, d)

    def __call__(self, x, self_mask, cross_kv, cross_mask, cache=None, index=None):
        h = self.n1(x)
        k, v = self.self_attn.kv(h)
        if cache is not None:  # write this step's keys at `index`, attend over the whole buffer
            k = jax.lax.dynamic_update_slice_in_dim(cache[0], k, index, axis=1)
            v = jax.lax.dynamic_update_slice_in_dim(cache[1], v, index, axis=1)
            cache = (k, v)
        x = x + self.self_attn.attend(h, k, v, self_mask)
        x = x + self.cross_attn.attend(self.n2(x), *cross_kv, cross_mask)
        return x + self.down(jax.nn.gelu(self.up(self.n3(x)))), cache


class Decoder(nnx.Module):
    """Stack of ``DecoderBlock`` with learned absolute positions."""

    def __init__(self, d, n_layers, n_heads, d_ff, max_len, *, rngs):
        self.pos = nnx.Embed(max_len, d, rngs=rngs)
        self.blocks = nnx.List([DecoderBlock(d, n_heads, d_ff, rngs=rngs) for _ in range(n_layers)])
        self.norm = RMSNorm(d, 1e-6, jnp.float32, rngs=rngs)
        self.max_len, self.n_heads, self.d = max_len, n_heads, d

    def cross_kv(self, mem_bsd):
        """Every layer's cross-attention keys/values from one matmul (fewer encoder-side ops)."""
        b, s, d = mem_bsd.shape
        a = [blk.cross_attn for blk in self.blocks]
        w = jnp.concatenate([m.kernel[...] for x in a for m in (x.k, x.v)], -1)  # [D, 2 L D]
        kv = (mem_bsd @ w).reshape(b, s, 2 * len(a), self.n_heads, d // self.n_heads)
        return [(kv[:, :, 2 * i], kv[:, :, 2 * i + 1]) for i in range(len(a))]

    def init_cache(self, batch: int):
        shape = (batch, self.max_len, self.n_heads, self.d // self.n_heads)
        return [(jnp.zeros(shape), jnp.zeros(shape)) for _ in self.blocks]

    def __call__(self, x_btd, positions_bt, self_mask_btt, cross_kv, src_mask_bs, cache=None):
        """Returns final-normed states [B, T, D] and the updated cache (step mode if given)."""
        x = x_btd + self.pos(positions_bt)
        cross_mask = jnp.broadcast_to(src_mask_bs[:, None, :], x.shape[:2] + src_mask_bs.shape[1:])
        new = []
        index = positions_bt[0, 0] if cache is not None else None
        for i, blk in enumerate(self.blocks):
            x, c = blk(
                x,
                self_mask_btt,
                cross_kv[i],
                cross_mask,
                None if cache is None else cache[i],
                index,
            )
            new.append(c)
        return self.norm(x), (new if cache is not None else None)


def causal_mask(tgt_mask_bt):
    t = tgt_mask_bt.shape[1]
    tri = jnp.tril(jnp.ones((t, t), bool))
    return tri[None] & tgt_mask_bt[:, None, :] | jnp.eye(t, dtype=bool)[None]


class _Base(nnx.Module):
    def __init__(self, src_vocab, cfg, *, rngs):
        enc_cfg = TransformerConfig(
            vocab_size=src_vocab,
            d_model=cfg.d_model,
            n_layers=cfg.enc_layers,
            n_heads=cfg.n_heads,
            n_kv_heads=cfg.n_heads,
            d_ff=cfg.d_ff,
            max_len=cfg.max_src,
            causal=False,
        )
        self.encoder = Transformer(enc_cfg, rngs=rngs)
        self.decoder = Decoder(
            cfg.d_model, cfg.dec_layers, cfg.n_heads, cfg.d_ff, cfg.max_tgt, rngs=rngs
        )

    def encode(self, src_bs, src_mask_bs):
        mem = self.encoder(src_bs, mask_bt=src_mask_bs).final
        return mem, self.decoder.cross_kv(mem)


class _Pointer(nnx.Module):
    """Bilinear pointer logits over source positions, padding masked to -inf-ish."""

    def __init__(self, d, *, rngs):
        self.q, self.k = _dense(rngs, d, d), _dense(rngs, d, d)

    def __call__(self, h_btd, mem_bsd, src_mask_bs):
        s = jnp.einsum("btd,bsd->bts", self.q(h_btd), self.k(mem_bsd)) / jnp.sqrt(h_btd.shape[-1])
        return jnp.where(src_mask_bs[:, None, :], s, -1e9)


class TreePieceParser(_Base):
    """Unit decoder (inputs: unit id or BOS = ``n_units``) plus parallel span pointers."""

    def __init__(self, src_vocab, n_units, n_slot_labels, max_unit_leaves, cfg, *, rngs):
        super().__init__(src_vocab, cfg, rngs=rngs)
        d = cfg.d_model
        self.embed = nnx.Embed(n_units + 1, d, rngs=rngs)
        self.head = _dense(rngs, d, n_units)
        self.leaf_label = nnx.Embed(n_slot_labels, d, rngs=rngs)
        self.leaf_pos = nnx.Embed(max_unit_leaves, d, rngs=rngs)
        self.leaf_proj = _dense(rngs, 2 * d, d)
        self.span_block = DecoderBlock(d, cfg.n_heads, cfg.d_ff, rngs=rngs)
        self.span_norm = RMSNorm(d, 1e-6, jnp.float32, rngs=rngs)
        self.start, self.end = _Pointer(d, rngs=rngs), _Pointer(d, rngs=rngs)

    def spans(self, h_step_bld, unit_bl, label_bl, pos_bl, leaf_mask_bl, mem, src_mask_bs):
        """Start/end logits [B, L, S] for L leaves, all in one parallel step.

        A leaf's query combines the decoder state that emitted its unit, the unit embedding, the
        slot label and its index inside the unit; one bidirectional block lets leaves coordinate.
        """
        q = self.leaf_proj(jnp.concatenate([h_step_bld, self.embed(unit_bl)], -1))
        q = q + self.leaf_label(label_bl) + self.leaf_pos(pos_bl)
        m = leaf_mask_bl[:, None, :] | jnp.eye(q.shape[1], dtype=bool)[None]
        cross = self.span_block.cross_attn.kv(mem)
        src_m = jnp.broadcast_to(src_mask_bs[:, None, :], q.shape[:2] + src_mask_bs.shape[1:])
        q, _ = self.span_block(q, m, cross, src_m)
        q = self.span_norm(q)
        return self.start(q, mem, src_mask_bs), self.end(q, mem, src_mask_bs)


class ARParser(_Base):
    """Token-level AR parser: classes ``[CLOSE, labels...]`` then one pointer per source position.

    Decoder inputs: class ids, ``WORD = n_cls`` plus the copied encoder state, ``BOS = n_cls + 1``.
    """

    def __init__(self, src_vocab, n_cls, cfg, *, rngs):
        super().__init__(src_vocab, cfg, rngs=rngs)
        d = cfg.d_model
        self.n_cls = n_cls
        self.embed = nnx.Embed(n_cls + 2, d, rngs=rngs)
        self.copy = _dense(rngs, d, d)
        self.head = _dense(rngs, d, n_cls)
        self.pointer = _Pointer(d, rngs=rngs)

    def embed_tokens(self, tok_bt, mem_bsd):
        is_ptr = tok_bt >= self.n_cls + 2
        pos = jnp.clip(tok_bt - (self.n_cls + 2), 0, mem_bsd.shape[1] - 1)
        copied = self.copy(jnp.take_along_axis(mem_bsd, pos[..., None], axis=1))
        base = self.embed(jnp.where(is_ptr, self.n_cls, jnp.minimum(tok_bt, self.n_cls + 1)))
        return base + jnp.where(is_ptr[..., None], copied, 0.0)

    def logits(self, h_btd, mem, src_mask_bs):
        """[B, T, n_cls + S] float32: class logits then pointer logits."""
        return jnp.concatenate([self.head(h_btd), self.pointer(h_btd, mem, src_mask_bs)], -1)


class NARParser(_Base):
    """Length classifier + one parallel decoder pass over position queries."""

    def __init__(self, src_vocab, n_cls, cfg, *, rngs):
        super().__init__(src_vocab, cfg, rngs=rngs)
        d = cfg.d_model
        self.query = nnx.Param(jnp.zeros((d,)))
        self.length = _dense(rngs, d, cfg.max_tgt + 1)
        self.head = _dense(rngs, d, n_cls)
        self.pointer = _Pointer(d, rngs=rngs)

    def length_logits(self, mem, src_mask_bs):
        m = src_mask_bs[..., None].astype(mem.dtype)
        return self.length(jnp.sum(mem * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0))

    def forward(self, length_b, mem, kv, src_mask_bs):
        """Logits [B, T_max, n_cls + S] for all target positions given the lengths."""
        b, t = length_b.shape[0], self.decoder.max_len
        pos = jnp.broadcast_to(jnp.arange(t)[None], (b, t))
        tgt_mask = pos < length_b[:, None]
        self_mask = tgt_mask[:, None, :] | jnp.eye(t, dtype=bool)[None]
        x = jnp.broadcast_to(self.query[...], (b, t, mem.shape[-1]))
        h, _ = self.decoder(x, pos, self_mask, kv, src_mask_bs)
        return jnp.concatenate([self.head(h), self.pointer(h, mem, src_mask_bs)], -1)
