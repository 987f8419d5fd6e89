"""Decoder-only Transformer (RMSNorm, RoPE, SwiGLU, grouped-query attention) in Flax NNX.

One network serves every method: `causal=True` for autoregressive LMs (with a KV cache for
decoding) and `causal=False` for masked-diffusion LMs and encoders. Every parameter carries logical
axis names (`embed`, `mlp`, `heads`, `kv`, `vocab`, `fused`); activations are constrained by
logical names through `models.sharding.constrain`, which is a no-op outside a mesh.

The Q/K/V projections are one parameter `wqkv` [D, K, H/K + 2, hd] and the SwiGLU gate/up
projections one `w_gate_up` [D, 2, F] (one matmul each instead of three and two). They are
initialised from the same random draws as the separate projections were, so a seed gives the same
network as before the fusion; `models.layout.fuse_projections` converts parameter trees with
separate `wq`/`wk`/`wv`/`w_gate`/`w_up`. Attention without a cache builds its score mask inside
each layer from the [B, S] key validity and iotas, so no [B, T, S] mask is materialised.

At scale two config options matter: `scan_layers` stores the blocks stacked on a leading `layers`
axis and runs them under `jax.lax.scan` (one compiled block instead of n_layers copies), and
`remat` recomputes block activations in the backward pass (`jax.checkpoint` with a named policy).
Neither changes the numbers; `models/layout.py` converts parameter trees between the layouts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from models.sharding import constrain

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def as_dtype(name: str | Any) -> Any:
    """Maps a config dtype string to a jnp dtype (passes dtypes through)."""
    if not isinstance(name, str):
        return name
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name]


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture hyper-parameters. `d_model` must equal `n_heads * head_dim`."""

    vocab_size: int
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    d_ff: int = 512
    max_len: int = 256
    causal: bool = True
    rope_theta: float = 10000.0
    param_dtype: str = "float32"
    dtype: str = "float32"
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    scan_layers: bool = False
    remat: str = "none"

    def __post_init__(self):
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"model.remat={self.remat!r}; expected one of {list(REMAT_POLICIES)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_config(cls, cd, **overrides) -> TransformerConfig:
        """Builds from a ConfigDict/dict, ignoring keys that are not architecture fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in dict(cd).items() if k in names}
        kw.update(overrides)
        return cls(**kw)

    def num_params(self, *, embeddings: bool = True) -> int:
        d, f, h, k, hd = self.d_model, self.d_ff, self.n_heads, self.n_kv_heads, self.head_dim
        per_layer = d * h * hd + 2 * d * k * hd + h * hd * d + 3 * d * f + 2 * d
        emb = self.vocab_size * d * (1 if self.tie_embeddings else 2) if embeddings else 0
        return self.n_layers * per_layer + d + emb


class TransformerOutput(NamedTuple):
    logits: jax.Array  # [B, T, V] float32
    final: jax.Array  # [B, T, D] final-normed hidden state
    hidden: jax.Array | None  # [n_layers + 1, B, T, D] or None
    cache: dict | None


def _init(rngs: nnx.Rngs, shape, dtype, fan_in_axes) -> jax.Array:
    """A fan-in-scaled truncated-normal draw (one `rngs.params()` key)."""
    init = nnx.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal", in_axis=fan_in_axes, out_axis=-1
    )
    return init(rngs.params(), shape, dtype)


def _param(rngs: nnx.Rngs, shape, dtype, fan_in_axes, names) -> nnx.Param:
    """A fan-in-scaled parameter tagged with logical axis names."""
    return nnx.Param(_init(rngs, shape, dtype, fan_in_axes), out_sharding=names)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, param_dtype, *, rngs: nnx.Rngs):
        del rngs
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), out_sharding=("embed",))

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)


def rope(x: jax.Array, positions_bt: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding (rotate-half convention, as in Llama/LLaDA).

    `x` is [B, T, ..., hd]: any head axes between the length and the feature axis share the angle.
    """
    hd = x.shape[-1]
    freq = theta ** (-jnp.arange(0, hd // 2, dtype=jnp.float32) * 2.0 / hd)
    ang = positions_bt.astype(jnp.float32)[..., None] * freq  # [B, T, hd/2]
    ang = ang.reshape(ang.shape[:2] + (1,) * (x.ndim - 3) + ang.shape[-1:])
    sin, cos = jnp.sin(ang), jnp.cos(ang)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def fuse_qkv(wq: jax.Array, wk: jax.Array, wv: jax.Array) -> jax.Array:
    """Separate projections [..., D, H, hd], [..., D, K, hd] x2 -> fused [..., D, K, H/K + 2, hd].

    Each kv head's slice holds its H/K query heads, then its key, then its value, so sharding the
    kv-head axis keeps every query head with the key and value it attends with. Query head n
    belongs to kv head n // (H/K), as in `jax.nn.dot_product_attention`.
    """
    *lead, d, h, hd = wq.shape
    k = wk.shape[-2]
    q = wq.reshape(*lead, d, k, h // k, hd)
    return jnp.concatenate([q, wk[..., None, :], wv[..., None, :]], axis=-2)


def split_qkv(wqkv: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The inverse of `fuse_qkv`: (wq [..., D, H, hd], wk [..., D, K, hd], wv [..., D, K, hd])."""
    *lead, d, k, g2, hd = wqkv.shape
    wq = wqkv[..., : g2 - 2, :].reshape(*lead, d, k * (g2 - 2), hd)
    return wq, wqkv[..., g2 - 2, :], wqkv[..., g2 - 1, :]


def _score_mask(valid_bs: jax.Array, empty_bt: jax.Array, causal: bool) -> jax.Array:
    """[B, 1, T, S] score mask from key validity and the rows that see no valid key.

    Built inside each attention call from two vectors and iotas, so XLA fuses it into the score
    masking instead of reading a materialised [B, T, S] mask. A row without any valid key (left
    padding under a causal mask) sees every slot, as it always has: changing that would change
    the logit at the last padded position, which predicts the first real token.
    """
    t, s = empty_bt.shape[1], valid_bs.shape[1]
    m = valid_bs[:, None, None, :]
    if causal:
        m = m & (jnp.arange(s)[None, :] <= jnp.arange(t)[:, None])[None, None]
    return m | empty_bt[:, None, :, None]


class Attention(nnx.Module):
    """Grouped-query attention with one fused Q/K/V projection `wqkv` [D, K, H/K + 2, hd]."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        pd, dt = as_dtype(cfg.param_dtype), as_dtype(cfg.dtype)
        h, k, hd, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_model
        # The three draws of the unfused model (same keys, order and fan-in), fused: a seed gives
        # the same function as before the fusion.
        wq, wk, wv = (_init(rngs, (d, n, hd), pd, 0) for n in (h, k, k))
        self.wqkv = nnx.Param(fuse_qkv(wq, wk, wv), out_sharding=("embed", "heads", "fused", "kv"))
        self.wo = _param(rngs, (h, hd, d), pd, (0, 1), ("heads", "kv", "embed"))
        self.dtype = dt

    def __call__(self, x_btd, positions_bt, mask, layer_cache, cache_index):
        """`mask`: without a cache, (key validity [B, S], no-visible-key rows [B, T]) from which
        each layer's score mask is built; with one, the full [B, T, S] mask over the slots."""
        cfg, dt = self.cfg, self.dtype
        b, t = x_btd.shape[:2]
        g = cfg.n_heads // cfg.n_kv_heads
        qkv = jnp.einsum("btd,dkgh->btkgh", x_btd, self.wqkv[...].astype(dt))
        qk = rope(qkv[..., : g + 1, :], positions_bt, cfg.rope_theta)  # one pass for q and k
        q = qk[..., :g, :].reshape(b, t, cfg.n_heads, cfg.head_dim)
        k, v = qk[..., g, :], qkv[..., g + 1, :]
        q = constrain(q, ("batch", "length", "heads", "kv"))
        new_cache = None
        if layer_cache is not None:
            ck = jax.lax.dynamic_update_slice_in_dim(
                layer_cache["k"], k.astype(layer_cache["k"].dtype), cache_index, axis=1
            )
            cv = jax.lax.dynamic_update_slice_in_dim(
                layer_cache["v"], v.astype(layer_cache["v"].dtype), cache_index, axis=1
            )
            new_cache = {"k": ck, "v": cv}
            k, v = ck.astype(dt), cv.astype(dt)
            out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, :, :])
        else:
            out = jax.nn.dot_product_attention(q, k, v, mask=_score_mask(*mask, cfg.causal))
        out = constrain(out, ("batch", "length", "heads", "kv"))
        return jnp.einsum("bthk,hkd->btd", out, self.wo[...].astype(dt)), new_cache


class MLP(nnx.Module):
    """SwiGLU with one fused gate/up projection `w_gate_up` [D, 2, F] (gate, up)."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        pd = as_dtype(cfg.param_dtype)
        d, f = cfg.d_model, cfg.d_ff
        gate, up = _init(rngs, (d, f), pd, 0), _init(rngs, (d, f), pd, 0)  # the unfused draws
        self.w_gate_up = nnx.Param(jnp.stack([gate, up], 1), out_sharding=("embed", "fused", "mlp"))
        self.w_down = _param(rngs, (f, d), pd, 0, ("mlp", "embed"))
        self.dtype = as_dtype(cfg.dtype)

    def __call__(self, x_btd):
        dt = self.dtype
        gu = jnp.einsum("btd,dcf->btcf", x_btd, self.w_gate_up[...].astype(dt))
        h = constrain(jax.nn.silu(gu[..., 0, :]) * gu[..., 1, :], ("batch", "length", "mlp"))
        return h @ self.w_down[...].astype(dt)


class Block(nnx.Module):
    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        pd = as_dtype(cfg.param_dtype)
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps, pd, rngs=rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps, pd, rngs=rngs)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x, positions, mask, layer_cache, cache_index):
        a, new_cache = self.attn(self.attn_norm(x), positions, mask, layer_cache, cache_index)
        x = x + a
        x = x + self.mlp(self.mlp_norm(x))
        return constrain(x, ("batch", "length", "embed")), new_cache


class Transformer(nnx.Module):
    """Decoder-only Transformer; see the module docstring."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        pd = as_dtype(cfg.param_dtype)
        self.dtype = as_dtype(cfg.dtype)
        emb = nnx.initializers.normal(1.0)(rngs.params(), (cfg.vocab_size, cfg.d_model), pd)
        self.embed = nnx.Param(emb, out_sharding=("vocab", "embed"))
        if cfg.scan_layers:
            # One Block whose parameters carry a leading `layers` axis (sharding metadata too).
            @nnx.split_rngs(splits=cfg.n_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
            def stacked(r):
                return Block(cfg, rngs=r)

            self.blocks = stacked(rngs)
        else:
            self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps, pd, rngs=rngs)
        if not cfg.tie_embeddings:
            self.unembed = _param(rngs, (cfg.d_model, cfg.vocab_size), pd, 0, ("embed", "vocab"))

    def head(self, h_btd: jax.Array) -> jax.Array:
        """Projects final-normed states to float32 logits [B, T, V]."""
        if self.cfg.tie_embeddings:
            w = self.embed[...].astype(self.dtype).T
        else:
            w = self.unembed[...].astype(self.dtype)
        logits = jnp.einsum(
            "btd,dv->btv", h_btd.astype(self.dtype), w, preferred_element_type=jnp.float32
        )
        return constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))

    def init_cache(self, batch: int, max_len: int, dtype=None) -> dict:
        """Empty KV cache: per-layer k/v [B, S, K, hd], key validity [B, S] and the write index."""
        cfg = self.cfg
        dtype = dtype or self.dtype
        shape = (batch, max_len, cfg.n_kv_heads, cfg.head_dim)
        if cfg.scan_layers:
            full = (cfg.n_layers,) + shape
            layers = {"k": jnp.zeros(full, dtype), "v": jnp.zeros(full, dtype)}
        else:
            layers = [
                {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
                for _ in range(cfg.n_layers)
            ]
        return {
            "layers": layers,
            "valid": jnp.zeros((batch, max_len), bool),
            "index": jnp.zeros((), jnp.int32),
        }

    def __call__(
        self,
        tokens_bt: jax.Array,
        *,
        mask_bt: jax.Array | None = None,
        positions_bt: jax.Array | None = None,
        cache: dict | None = None,
        return_hidden: bool = False,
        embeddings_btd: jax.Array | None = None,
    ) -> TransformerOutput:
        """Runs the network.

        Args:
          tokens_bt: int tokens [B, T].
          mask_bt: bool key-padding mask [B, T] (True = real token); padding is never attended to.
          positions_bt: RoPE positions [B, T]; default: count of real tokens before each slot (so
            left padding does not shift positions), offset by the cache contents when decoding.
          cache: from `init_cache`; the T new tokens are written at `cache["index"]`.
          return_hidden: also return every layer's hidden state [n_layers + 1, B, T, D].
          embeddings_btd: optional input embeddings replacing the token lookup (prompt tuning).

        Returns:
          TransformerOutput(logits [B,T,V] fp32, final [B,T,D], hidden or None, cache or None).
        """
        cfg = self.cfg
        b, t = tokens_bt.shape
        if mask_bt is None:
            mask_bt = jnp.ones((b, t), bool)
        if cache is None:
            if positions_bt is None:
                positions_bt = jnp.maximum(jnp.cumsum(mask_bt, axis=1) - 1, 0)
            key_valid = mask_bt
            index = 0
        else:
            index = cache["index"]
            key_valid = jax.lax.dynamic_update_slice_in_dim(cache["valid"], mask_bt, index, axis=1)
            if positions_bt is None:
                prev = jnp.sum(cache["valid"], axis=1, keepdims=True)
                positions_bt = prev + jnp.maximum(jnp.cumsum(mask_bt, axis=1) - 1, 0)
            q_slot = index + jnp.arange(t)
            k_slot = jnp.arange(key_valid.shape[1])
        if cache is None:
            # Rows with no valid key at or before them (at all, bidirectionally).
            seen = (
                jnp.cumsum(key_valid, axis=1)
                if cfg.causal
                else jnp.sum(key_valid, axis=1, keepdims=True)
            )
            attn_mask = (key_valid, jnp.broadcast_to(seen == 0, (b, t)))
        else:
            attn_mask = jnp.broadcast_to(key_valid[:, None, :], (b, t, key_valid.shape[1]))
            if cfg.causal:
                attn_mask = attn_mask & (k_slot[None, None, :] <= q_slot[None, :, None])
            # A padded query row with no valid key would give NaNs; let it mix every slot.
            attn_mask = attn_mask | ~jnp.any(attn_mask, axis=-1, keepdims=True)

        if embeddings_btd is None:
            x = jnp.take(self.embed[...], tokens_bt, axis=0).astype(self.dtype)
        else:
            x = embeddings_btd.astype(self.dtype)
        x = constrain(x, ("batch", "length", "embed"))
        layers = cache["layers"] if cache is not None else None
        run = self._scan_blocks if cfg.scan_layers else self._loop_blocks
        x, hidden, new_layers = run(x, positions_bt, attn_mask, layers, index, return_hidden)
        final = self.final_norm(x)
        logits = self.head(final)
        new_cache = None
        if cache is not None:
            new_cache = {"layers": new_layers, "valid": key_valid, "index": index + t}
        return TransformerOutput(logits, final, hidden, new_cache)

    def _loop_blocks(self, x, positions, mask, layers, index, return_hidden):
        """Unscanned layout: a Python loop over `nnx.List` blocks (remat per block if set)."""
        policy = REMAT_POLICIES[self.cfg.remat]
        hidden, new_layers = [x], []
        for i, block in enumerate(self.blocks):
            lc = layers[i] if layers is not None else None
            if self.cfg.remat == "none":
                x, lc = block(x, positions, mask, lc, index)
            else:
                gd, st = nnx.split(block)
                fn = jax.checkpoint(lambda s, *a, gd=gd: nnx.merge(gd, s)(*a), policy=policy)
                x, lc = fn(st, x, positions, mask, lc, index)
            new_layers.append(lc)
            hidden.append(x)
        return x, (jnp.stack(hidden) if return_hidden else None), new_layers

    def _scan_blocks(self, x, positions, mask, layers, index, return_hidden):
        """Scanned layout: `lax.scan` over the stacked block parameters (and KV cache)."""
        gd, st = nnx.split(self.blocks)

        def body(h, xs):
            layer_state, lc = xs
            h, lc = nnx.merge(gd, layer_state)(h, positions, mask, lc, index)
            return h, (lc, h if return_hidden else None)

        if self.cfg.remat != "none":
            body = jax.checkpoint(body, policy=REMAT_POLICIES[self.cfg.remat])
        x0 = x
        x, (new_layers, hs) = jax.lax.scan(body, x, (st, layers))
        hidden = jnp.concatenate([x0[None], hs]) if return_hidden else None
        return x, hidden, new_layers
