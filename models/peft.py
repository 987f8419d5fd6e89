"""Parameter-efficient baselines around a frozen `models.transformer.Transformer`, and READ.

The baselines READ (arXiv:2305.15348) is compared with (spec §4), each a module surgery on the
backbone or a side module, all sharing one task head (mean-pooled final state -> linear):

- `full`    every backbone parameter trains.
- `head`    only the task head trains (the backbone runs under stop_gradient).
- `bitfit`  (Zaken et al. 2021) the backbone has no biases, so as for T5 we add zero-initialised
            shifts after every RMSNorm and train them with the norm gains.
- `lora`    (Hu et al. 2021) W + A B with `nnx.LoRA`/`nnx.LoRAParam` (B = 0 at init, rank r,
            scale alpha/r folded into the product) on the chosen projections.
- `adapter` (Houlsby et al. 2019) bottleneck x + U gelu(D x), U = 0 at init, after the attention
            and the MLP of every block.
- `prompt`  (Lester et al. 2021) P trainable input embeddings prepended to the sequence.
- `ladder`  LST-lite (Sung et al. 2022): a narrow per-token side network fed by gated down-
            projections of every backbone layer (stop_gradient), up-projected (zero init) onto
            the final state. Unlike LST the side blocks do not attend.
- `read`    `models.read.Read` on the per-layer states (stop_gradient).

Trainable parameters are picked by an nnx filter per method (`trainable_filter`), split from the
frozen ones with `nnx.split`, so the optimizer state only holds the trainable ones.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from models.read import Read, ReadParam, backbone_states
from models.transformer import Transformer

METHODS = ("full", "head", "bitfit", "lora", "adapter", "prompt", "ladder", "read")
LORA_TARGETS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


class HeadParam(nnx.Param):
    """Task-head parameters (trainable for every method)."""


class BiasParam(nnx.Param):
    """BitFit shifts."""


class AdapterParam(nnx.Param):
    """Bottleneck-adapter parameters."""


class PromptParam(nnx.Param):
    """Soft-prompt embeddings."""


class SideParam(nnx.Param):
    """Ladder side-network parameters."""


class TaskHead(nnx.Module):
    """Mean-pools real tokens of the final state and projects to `n_out` outputs (float32)."""

    def __init__(self, d_model: int, n_out: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.normal(1.0 / d_model**0.5)
        self.w = HeadParam(init(rngs.params(), (d_model, n_out), jnp.float32))
        self.b = HeadParam(jnp.zeros((n_out,), jnp.float32))

    def __call__(self, final_btd: jax.Array, mask_bt: jax.Array) -> jax.Array:
        m = mask_bt.astype(jnp.float32)[..., None]
        pooled = jnp.sum(final_btd.astype(jnp.float32) * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0)
        return pooled @ self.w[...] + self.b[...]


class LoRAWeight(nnx.Module):
    """A weight read as `W + (A B) * alpha / r` reshaped to W's shape; drop-in for a Param.

    The backbone reads weights as `param[...]`, so indexing returns the merged weight. `n_in` is
    how many leading axes of W are input axes (wq: (d, h, k) -> 1; wo: (h, k, d) -> 2).
    """

    def __init__(self, base: nnx.Param, n_in: int, rank: int, alpha: float, *, rngs: nnx.Rngs):
        shape = base.shape
        fan_in, fan_out = math.prod(shape[:n_in]), math.prod(shape[n_in:])
        self.base = base
        self.lora = nnx.LoRA(fan_in, rank, fan_out, rngs=rngs)
        self.scale = alpha / rank
        self.shape = shape

    def __getitem__(self, idx):
        delta = (self.lora.lora_a[...] @ self.lora.lora_b[...]) * self.scale
        return (self.base[...] + delta.reshape(self.shape).astype(self.base.dtype))[idx]


class Shifted(nnx.Module):
    """`norm(x) + b` with b = 0 at init (BitFit on a bias-free backbone)."""

    def __init__(self, norm: nnx.Module, dim: int):
        self.norm = norm
        self.bias = BiasParam(jnp.zeros((dim,), jnp.float32))

    def __call__(self, x):
        return self.norm(x) + self.bias[...].astype(x.dtype)


class Adapter(nnx.Module):
    """Bottleneck adapter `y + U gelu(D y)` applied to a sublayer's output (U = 0 at init)."""

    def __init__(self, sublayer: nnx.Module, d_model: int, bottleneck: int, *, rngs: nnx.Rngs):
        self.sublayer = sublayer
        init = nnx.initializers.normal(1.0 / d_model**0.5)
        self.down = AdapterParam(init(rngs.params(), (d_model, bottleneck), jnp.float32))
        self.b_down = AdapterParam(jnp.zeros((bottleneck,), jnp.float32))
        self.up = AdapterParam(jnp.zeros((bottleneck, d_model), jnp.float32))
        self.b_up = AdapterParam(jnp.zeros((d_model,), jnp.float32))

    def adapt(self, y):
        z = jax.nn.gelu(y.astype(jnp.float32) @ self.down[...] + self.b_down[...])
        return y + (z @ self.up[...] + self.b_up[...]).astype(y.dtype)

    def __call__(self, *args, **kw):
        out = self.sublayer(*args, **kw)
        if isinstance(out, tuple):  # attention returns (output, cache)
            return (self.adapt(out[0]),) + tuple(out[1:])
        return self.adapt(out)


# LoRA targets that are slices of a fused projection: (fused parameter, slice index).
_FUSED_PARTS = {
    "wq": ("wqkv", 0),
    "wk": ("wqkv", 1),
    "wv": ("wqkv", 2),
    "w_gate": ("w_gate_up", 0),
    "w_up": ("w_gate_up", 1),
}


class FusedLoRAWeight(nnx.Module):
    """A fused projection (`wqkv` [D, K, H/K + 2, hd] or `w_gate_up` [D, 2, F]) read merged with
    low-rank updates on some of its parts; drop-in for the Param like `LoRAWeight`.

    Each targeted part (`wq`, `wv`, ...) has its own `nnx.LoRA` from D to the part's outputs, as
    it had when the projections were separate parameters, so LoRA on wq and wv adapts the same
    functions with the same initial draws.
    """

    def __init__(self, base: nnx.Param, scale: float):
        self.base = base
        self.scale = scale
        self.parts: tuple[str, ...] = ()

    def add(self, name: str, rank: int, *, rngs: nnx.Rngs) -> None:
        shape = self.base.shape
        if len(shape) == 4:  # wqkv: wq has K * H/K heads, wk and wv one per kv head
            fan_out = shape[1] * shape[3] * ((shape[2] - 2) if name == "wq" else 1)
        else:
            fan_out = shape[2]
        setattr(self, name, nnx.LoRA(shape[0], rank, fan_out, rngs=rngs))
        self.parts = self.parts + (name,)

    def _delta(self, name: str, shape) -> jax.Array:
        if name not in self.parts:
            return jnp.zeros(shape, jnp.float32)
        lora = getattr(self, name)
        return ((lora.lora_a[...] @ lora.lora_b[...]) * self.scale).reshape(shape)

    def __getitem__(self, idx):
        w = self.base[...]
        if w.ndim == 4:
            d, k, g2, hd = w.shape
            q = self._delta("wq", (d, k, g2 - 2, hd))
            kv = [self._delta(n, (d, k, 1, hd)) for n in ("wk", "wv")]
            delta = jnp.concatenate([q, *kv], axis=2)
        else:
            d, _, f = w.shape
            delta = jnp.stack([self._delta(n, (d, f)) for n in ("w_gate", "w_up")], axis=1)
        return (w + delta.astype(w.dtype))[idx]


def apply_lora(
    backbone: Transformer,
    rank: int = 8,
    alpha: float | None = None,
    targets=("wq", "wv"),
    *,
    rngs: nnx.Rngs,
) -> Transformer:
    """Puts LoRA on the targeted projections of every block (in place).

    `wo` and `w_down` become `LoRAWeight`s; `wq`/`wk`/`wv` and `w_gate`/`w_up` are slices of the
    fused `wqkv` and `w_gate_up`, which become `FusedLoRAWeight`s holding one LoRA per target
    (created in the order of `targets`, as the unfused model created them).
    """
    unknown = set(targets) - set(LORA_TARGETS)
    if unknown:
        raise ValueError(f"unknown LoRA target(s) {sorted(unknown)}; expected {LORA_TARGETS}")
    alpha = float(rank if alpha is None else alpha)
    for block in backbone.blocks:
        for name in targets:
            fused = _FUSED_PARTS.get(name, (name,))[0]
            parent = block.attn if fused in ("wqkv", "wo") else block.mlp
            w = getattr(parent, fused)
            if fused == name:
                n_in = 2 if name == "wo" else 1
                setattr(parent, name, LoRAWeight(w, n_in, rank, alpha, rngs=rngs))
                continue
            if not isinstance(w, FusedLoRAWeight):
                w = FusedLoRAWeight(w, alpha / rank)
                setattr(parent, fused, w)
            w.add(name, rank, rngs=rngs)
    return backbone


def apply_bitfit(backbone: Transformer) -> Transformer:
    """Adds a zero-initialised shift after every RMSNorm (in place)."""
    d = backbone.cfg.d_model
    for block in backbone.blocks:
        block.attn_norm = Shifted(block.attn_norm, d)
        block.mlp_norm = Shifted(block.mlp_norm, d)
    backbone.final_norm = Shifted(backbone.final_norm, d)
    return backbone


def apply_adapters(backbone: Transformer, bottleneck: int = 16, *, rngs: nnx.Rngs) -> Transformer:
    """Houlsby adapters after the attention and the MLP of every block (in place)."""
    d = backbone.cfg.d_model
    for block in backbone.blocks:
        block.attn = Adapter(block.attn, d, bottleneck, rngs=rngs)
        block.mlp = Adapter(block.mlp, d, bottleneck, rngs=rngs)
    return backbone


class Ladder(nnx.Module):
    """LST-lite side network: s_i = s_i' + MLP(s_i'), s_i' = mu_i s_{i-1} + (1 - mu_i) D_i phi_i."""

    def __init__(self, n_layers: int, d_model: int, d_side: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.normal(1.0 / d_model**0.5)
        init_s = nnx.initializers.normal(1.0 / d_side**0.5)
        n1 = n_layers + 1
        self.down = SideParam(init(rngs.params(), (n1, d_model, d_side), jnp.float32))
        self.gate = SideParam(jnp.zeros((n_layers,), jnp.float32))  # mu = sigmoid(0) = 1/2
        self.w1 = SideParam(init_s(rngs.params(), (n_layers, d_side, 2 * d_side), jnp.float32))
        self.w2 = SideParam(init_s(rngs.params(), (n_layers, 2 * d_side, d_side), jnp.float32))
        self.up = SideParam(jnp.zeros((d_side, d_model), jnp.float32))

    def __call__(self, hidden_lbtd: jax.Array, final_btd: jax.Array) -> jax.Array:
        hidden = jax.lax.stop_gradient(hidden_lbtd).astype(jnp.float32)
        hidden = hidden * jax.lax.rsqrt(jnp.mean(hidden**2, -1, keepdims=True) + 1e-6)
        down = jnp.einsum("lbtd,lds->lbts", hidden, self.down[...])
        mu = jax.nn.sigmoid(self.gate[...])
        s = down[0]
        for i in range(mu.shape[0]):  # N is small and static
            s = mu[i] * s + (1.0 - mu[i]) * down[i + 1]
            s = s + jax.nn.gelu(s @ self.w1[...][i]) @ self.w2[...][i]
        final = jax.lax.stop_gradient(final_btd)
        return (final.astype(jnp.float32) + s @ self.up[...]).astype(final_btd.dtype)


class AdaptedModel(nnx.Module):
    """A backbone adapted by one method, with a task head on the mean-pooled final state.

    Args:
      backbone: a (pretrained) `Transformer`; modified in place by the surgery methods.
      method: one of METHODS.
      n_out: task-head outputs (classes, or 1 for regression).
      hp: method hyper-parameters (dict): lora_rank, lora_alpha, lora_targets, adapter_dim,
        prompt_len, ladder_dim, read_hidden, read_cell, read_aggregate, read_remat.
    """

    def __init__(
        self,
        backbone: Transformer,
        method: str,
        n_out: int,
        hp: dict | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        hp = dict(hp or {})
        cfg = backbone.cfg
        self.method = method
        self.prompt_len = 0
        if method == "lora":
            apply_lora(
                backbone,
                hp.get("lora_rank", 8),
                hp.get("lora_alpha"),
                tuple(hp.get("lora_targets", ("wq", "wv"))),
                rngs=rngs,
            )
        elif method == "bitfit":
            apply_bitfit(backbone)
        elif method == "adapter":
            apply_adapters(backbone, hp.get("adapter_dim", 16), rngs=rngs)
        elif method == "prompt":
            self.prompt_len = int(hp.get("prompt_len", 8))
            emb = backbone.embed[...]
            # Initialise from random vocabulary embeddings (Lester et al.'s sampled-vocab init).
            idx = jax.random.randint(rngs.params(), (self.prompt_len,), 0, emb.shape[0])
            self.prompt = PromptParam(emb[idx].astype(jnp.float32))
        elif method == "ladder":
            self.side = Ladder(cfg.n_layers, cfg.d_model, hp.get("ladder_dim", 16), rngs=rngs)
        elif method == "read":
            self.side = Read(
                cfg.d_model,
                hp.get("read_hidden", 32),
                cell=hp.get("read_cell", "gru"),
                aggregate=hp.get("read_aggregate", "mean"),
                remat=hp.get("read_remat", True),
                rngs=rngs,
            )
        self.backbone = backbone
        self.head = TaskHead(cfg.d_model, n_out, rngs=rngs)

    @property
    def uses_states(self) -> bool:
        """Whether the method only needs frozen backbone states (so they can be cached)."""
        return self.method in ("head", "ladder", "read")

    def from_states(self, hidden_lbtd, final_btd, mask_bt) -> jax.Array:
        """Task outputs [B, n_out] from (cached) frozen backbone states."""
        if self.method == "head":
            final = jax.lax.stop_gradient(final_btd)
        else:
            final = self.side(hidden_lbtd, final_btd)
        return self.head(final, mask_bt)

    def __call__(self, tokens_bt: jax.Array, mask_bt: jax.Array) -> jax.Array:
        """Task outputs [B, n_out] float32."""
        if self.uses_states:
            hidden, final = backbone_states(self.backbone, tokens_bt, mask_bt)
            return self.from_states(hidden, final, mask_bt)
        if self.method == "prompt":
            b, p = tokens_bt.shape[0], self.prompt_len
            emb = jnp.take(self.backbone.embed[...], tokens_bt, axis=0)
            prompt = jnp.broadcast_to(self.prompt[...].astype(emb.dtype), (b, p, emb.shape[-1]))
            tokens = jnp.concatenate([jnp.zeros((b, p), tokens_bt.dtype), tokens_bt], 1)
            mask = jnp.concatenate([jnp.ones((b, p), bool), mask_bt], 1)
            out = self.backbone(
                tokens, mask_bt=mask, embeddings_btd=jnp.concatenate([prompt, emb], 1)
            )
            return self.head(out.final[:, p:], mask_bt)
        return self.head(self.backbone(tokens_bt, mask_bt=mask_bt).final, mask_bt)


def trainable_filter(method: str):
    """nnx filter of the trainable variables of `method` (the task head always trains)."""
    extra = {
        "full": nnx.Param,
        "head": nnx.Nothing,
        "bitfit": nnx.Any(
            BiasParam, nnx.All(nnx.Param, nnx.PathContains("scale"), nnx.PathContains("backbone"))
        ),
        "lora": nnx.LoRAParam,
        "adapter": AdapterParam,
        "prompt": PromptParam,
        "ladder": SideParam,
        "read": ReadParam,
    }[method]
    return nnx.Any(HeadParam, extra)


def optax_labels(model: AdaptedModel) -> nnx.State:
    """Labels "trainable" / "frozen" over all of `model`'s parameters, for optax masks.

    For training on the whole parameter tree, e.g.
    `optax.multi_transform({"trainable": adamw, "frozen": optax.set_to_zero()}, labels)`; the
    runner instead splits the trainable part out (`split_trainable`), so that neither gradients
    nor optimizer state exist for the frozen part.
    """
    params = nnx.state(model, nnx.Param)
    _, train, _ = split_trainable(model)
    keys = {p for p, _ in nnx.to_flat_state(train)}
    flat = [(p, "trainable" if p in keys else "frozen") for p, _ in nnx.to_flat_state(params)]
    return nnx.State.from_flat_path(flat)


def split_trainable(model: AdaptedModel):
    """(graphdef, trainable state, frozen state) for the functional update step."""
    return nnx.split(model, trainable_filter(model.method), ...)


def count_trainable(model: AdaptedModel) -> dict[str, int]:
    """Trainable / total parameter counts (task head included in both)."""
    _, train, rest = split_trainable(model)
    n_train = sum(x.size for x in jax.tree.leaves(train))
    n_rest = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) - n_train
    return {"trainable": int(n_train), "total": int(n_train + n_rest)}
