"""READ: REcurrent ADaptation of a frozen backbone (arXiv:2305.15348, spec: papers/read.md).

A small RNN reads the frozen backbone's per-layer hidden states *across the layer index*, one
sequence per token (RNN batch = B*T, RNN time = layer), and adds a correction to the backbone's
final-normed state (spec §2):

    x_i  = s_in * RMSNorm(phi_i)                      i = 1..N   (joiner, T5-style RMSNorm)
    h_0  = 0   or   s_h0 * W_h0 RMSNorm(phi_0)
    h_i  = Cell(h_{i-1}, x_i)                          Cell in {Elman, GRU, LSTM}
    g    = mean_i h_i  ("mean")   or   h_N  ("last")
    delta = s_out * (W_out g + b_out)                 W_out, b_out = 0 at init
    phi_N' = FinalNorm(phi_N) + delta                 then the (task) head runs on phi_N'

The backbone states enter under `stop_gradient`, so no cotangent ever reaches the backbone: the
gradient needs no backbone activations and no backbone backward matmuls. States can be computed
once per dataset (`cache_states`) and fed in place of the backbone.

Cells use the PyTorch parameterisation (separate input and recurrent biases), so one stack has
`G*(r*d + r^2 + 2r) + (r*d + d) + d` parameters (G = 1, 3, 4 for Elman, GRU, LSTM; spec §2),
independent of the backbone depth N.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_GATES = {"elman": 1, "gru": 3, "lstm": 4}


class ReadParam(nnx.Param):
    """Variable type of READ's parameters (selects them as trainable)."""


def read_param_count(
    d: int, r: int, cell: str = "gru", *, learned_h0: bool = False, out_norm: bool = False
) -> int:
    """Parameter count of one READ stack (spec §2 formula plus the optional parts)."""
    g = _GATES[cell]
    n = g * (r * d + r * r + 2 * r) + (r * d + d) + d
    n += (d * r + r + d) if learned_h0 else 0  # W_h0, b_h0 and the phi_0 norm scale
    return n + (r if out_norm else 0)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float = 1e-6) -> jax.Array:
    """T5-style RMSNorm in float32 (no mean subtraction)."""
    x32 = x.astype(jnp.float32)
    return x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps) * scale


def cell_step(cell: str, carry, xw_ng: jax.Array, w_hh: jax.Array, b_hh: jax.Array):
    """One recurrent step given the precomputed input projection `xw_ng` = x W_ih + b_ih.

    Args:
      cell: "elman" | "gru" | "lstm".
      carry: h [n, r] (LSTM: (h, c)).
      xw_ng: [n, G*r] input projection of this layer's states.
      w_hh: [r, G*r]; b_hh: [G*r].

    Returns:
      (new carry, new h [n, r]).
    """
    h = carry[0] if cell == "lstm" else carry
    hw = h @ w_hh + b_hh
    if cell == "elman":
        h = jnp.tanh(xw_ng + hw)
        return h, h
    if cell == "gru":  # PyTorch GRU: the reset gate scales the recurrent candidate term
        xr, xz, xn = jnp.split(xw_ng, 3, axis=-1)
        hr, hz, hn = jnp.split(hw, 3, axis=-1)
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h = (1.0 - z) * n + z * h
        return h, h
    c = carry[1]
    i, f, g, o = jnp.split(xw_ng + hw, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


class Read(nnx.Module):
    """The READ side network for one stack.

    Args:
      d_model: backbone width d.
      hidden: RNN width r.
      cell: "gru" (default), "lstm" or "elman".
      aggregate: "mean" over h_1..h_N (default) or "last" (h_N).
      learned_h0: h_0 = s_h0 W_h0 RMSNorm(phi_0) instead of 0.
      out_norm: RMSNorm on g before the output projection.
      zero_init: W_out, b_out = 0 so the model starts exactly at the frozen backbone.
      s_in, s_out, s_h0: fixed scales of the joiner, the output and h_0.
      remat: recompute each layer's gates in the backward pass instead of storing them
        (`jax.checkpoint` on the scan body): less training memory for a few % more FLOPs.
    """

    def __init__(
        self,
        d_model: int,
        hidden: int = 64,
        *,
        cell: str = "gru",
        aggregate: str = "mean",
        learned_h0: bool = False,
        out_norm: bool = False,
        zero_init: bool = True,
        s_in: float = 1.0,
        s_out: float = 1.0,
        s_h0: float = 1.0,
        remat: bool = True,
        rngs: nnx.Rngs,
    ):
        if cell not in _GATES:
            raise ValueError(f"unknown READ cell {cell!r}; expected one of {sorted(_GATES)}")
        if aggregate not in ("mean", "last"):
            raise ValueError(f"unknown READ aggregate {aggregate!r}; expected 'mean' or 'last'")
        d, r, g = d_model, hidden, _GATES[cell]
        self.cell, self.aggregate, self.remat = cell, aggregate, remat
        self.s_in, self.s_out, self.s_h0 = s_in, s_out, s_h0
        unif = lambda shape, fan: jax.random.uniform(  # PyTorch RNN init: U(-1/sqrt(r), 1/sqrt(r))
            rngs.params(), shape, jnp.float32, -1.0 / np.sqrt(fan), 1.0 / np.sqrt(fan)
        )
        self.in_scale = ReadParam(jnp.ones((d,), jnp.float32))
        self.w_ih = ReadParam(unif((d, g * r), r))
        self.w_hh = ReadParam(unif((r, g * r), r))
        self.b_ih = ReadParam(unif((g * r,), r))
        self.b_hh = ReadParam(unif((g * r,), r))
        if zero_init:
            self.w_out = ReadParam(jnp.zeros((r, d), jnp.float32))
            self.b_out = ReadParam(jnp.zeros((d,), jnp.float32))
        else:
            self.w_out = ReadParam(unif((r, d), r))
            self.b_out = ReadParam(unif((d,), r))
        self.learned_h0, self.out_norm = learned_h0, out_norm
        if learned_h0:
            self.h0_scale = ReadParam(jnp.ones((d,), jnp.float32))
            self.w_h0 = ReadParam(unif((d, r), d))
            self.b_h0 = ReadParam(jnp.zeros((r,), jnp.float32))
        if out_norm:
            self.out_scale = ReadParam(jnp.ones((r,), jnp.float32))

    def correction(self, hidden_lbtd: jax.Array) -> jax.Array:
        """delta [B, T, D] float32 from the backbone states [N+1, B, T, D] (phi_0 .. phi_N)."""
        hidden_lbtd = jax.lax.stop_gradient(hidden_lbtd)
        n1, b, t, d = hidden_lbtd.shape
        x_lnd = self.s_in * rms_norm(hidden_lbtd[1:], self.in_scale[...]).reshape(n1 - 1, b * t, d)
        # One matmul for every layer's input projection; only h W_hh stays inside the scan.
        xw_lng = x_lnd @ self.w_ih[...] + self.b_ih[...]
        r = self.w_hh.shape[0]
        if self.learned_h0:
            phi0 = rms_norm(hidden_lbtd[0], self.h0_scale[...]).reshape(b * t, d)
            h0 = self.s_h0 * (phi0 @ self.w_h0[...] + self.b_h0[...])
        else:
            h0 = jnp.zeros((b * t, r), jnp.float32)
        carry = (h0, jnp.zeros_like(h0)) if self.cell == "lstm" else h0
        w_hh, b_hh = self.w_hh[...], self.b_hh[...]

        def step(carry_and_sum, xw_ng):
            c, s = carry_and_sum
            c, h = cell_step(self.cell, c, xw_ng, w_hh, b_hh)
            return (c, s + h), None

        # remat: keep only the carry per layer for the backward pass and recompute the gates.
        body = jax.checkpoint(step) if self.remat else step
        (carry, h_sum), _ = jax.lax.scan(body, (carry, jnp.zeros_like(h0)), xw_lng)
        g = (
            h_sum / (n1 - 1)
            if self.aggregate == "mean"
            else (carry[0] if self.cell == "lstm" else carry)
        )
        if self.out_norm:
            g = rms_norm(g, self.out_scale[...])
        delta = self.s_out * (g @ self.w_out[...] + self.b_out[...])
        return delta.reshape(b, t, d)

    def __call__(self, hidden_lbtd: jax.Array, final_btd: jax.Array) -> jax.Array:
        """Corrected final state phi_N' = final + delta [B, T, D] (final: backbone final-normed)."""
        delta = self.correction(hidden_lbtd)
        final = jax.lax.stop_gradient(final_btd)
        return (final.astype(jnp.float32) + delta).astype(final_btd.dtype)


def backbone_states(backbone, tokens_bt, mask_bt, **kw):
    """Frozen backbone states (hidden [N+1, B, T, D], final [B, T, D]) under stop_gradient."""
    out = backbone(tokens_bt, mask_bt=mask_bt, return_hidden=True, **kw)
    return jax.lax.stop_gradient(out.hidden), jax.lax.stop_gradient(out.final)


def cache_states(
    backbone, tokens_nt: np.ndarray, mask_nt: np.ndarray, *, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Runs the frozen backbone once over a dataset ("offline cache" mode, spec §6).

    Returns:
      dict with hidden [n, N+1, T, D] and final [n, T, D] (example axis first, so the cache is
      sliced into batches like any other field; `Read` wants hidden as [N+1, B, T, D]).
    """
    graphdef, state = nnx.split(backbone)

    @jax.jit
    def run(state, tok, msk):
        h, f = backbone_states(nnx.merge(graphdef, state), tok, msk)
        return jnp.moveaxis(h, 0, 1), f

    hs, fs = [], []
    for i in range(0, len(tokens_nt), batch_size):
        tok, msk = tokens_nt[i : i + batch_size], mask_nt[i : i + batch_size]
        pad = batch_size - len(tok)  # keep one compiled shape
        if pad:
            tok = np.concatenate([tok, np.zeros((pad,) + tok.shape[1:], tok.dtype)])
            msk = np.concatenate([msk, np.zeros((pad,) + msk.shape[1:], msk.dtype)])
        h, f = run(state, tok, msk)
        hs.append(np.asarray(h)[: batch_size - pad])
        fs.append(np.asarray(f)[: batch_size - pad])
    return {"hidden": np.concatenate(hs), "final": np.concatenate(fs)}
