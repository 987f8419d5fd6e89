"""Weight import from local HF-format safetensors (LLaDA and Llama naming) into `Transformer`.

LLaDA-8B-Instruct (arXiv:2502.09992; the SPG base model, arXiv:2510.09541) ships
`model-0000k-of-0000n.safetensors` shards with OLMo-style names; Llama checkpoints use the
`transformers` Llama names. Both map onto our parameters (torch `Linear` weights are [out, in], so
they are transposed, split into heads, and fused as `models.transformer.fuse_qkv` lays them out):

ours -> LLaDA (`model.transformer.` + ...) / Llama (`model.` + ...):
  embed [V, D]                 wte                  / embed_tokens
  blocks.i.attn.wqkv           blocks.i.q/k/v_proj  / layers.i.self_attn.q/k/v_proj
    [D, K, H/K + 2, hd]
  blocks.i.attn.wo [H, hd, D]  blocks.i.attn_out    / layers.i.self_attn.o_proj
  blocks.i.mlp.w_gate_up       blocks.i.ff_proj/up_proj / layers.i.mlp.gate_proj/up_proj
    [D, 2, F]
  blocks.i.mlp.w_down          blocks.i.ff_out      / layers.i.mlp.down_proj
  blocks.i.attn_norm/mlp_norm  blocks.i.attn_norm/ff_norm / layers.i.input_/post_attention_layernorm
  final_norm                   ln_f                 / norm
  unembed [D, V]               ff_out               / lm_head (no `model.` prefix)
(all `.weight`).

Both use rotate-half RoPE, as `models.transformer.rope` does, so q/k need no permutation.
LLaDA-8B: `TransformerConfig(vocab_size=126464, d_model=4096, n_layers=32, n_heads=32,
n_kv_heads=32, d_ff=12288, rope_theta=500000.0, norm_eps=1e-5, causal=False)` (see
`configs/spg.py:llada8b`); load with `param_dtype="bfloat16"` and a mesh so each tensor is placed
sharded as it is read (16 GB of bf16 weights never sit on one device).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.transformer import Transformer, TransformerConfig, as_dtype, split_qkv

NAMINGS = {
    "llada": dict(
        prefix="model.transformer.",
        embed="wte.weight",
        block="blocks.{i}.",
        q="q_proj.weight",
        k="k_proj.weight",
        v="v_proj.weight",
        o="attn_out.weight",
        gate="ff_proj.weight",
        up="up_proj.weight",
        down="ff_out.weight",
        attn_norm="attn_norm.weight",
        mlp_norm="ff_norm.weight",
        final_norm="ln_f.weight",
        unembed="ff_out.weight",
    ),
    "llama": dict(
        prefix="model.",
        embed="embed_tokens.weight",
        block="layers.{i}.",
        q="self_attn.q_proj.weight",
        k="self_attn.k_proj.weight",
        v="self_attn.v_proj.weight",
        o="self_attn.o_proj.weight",
        gate="mlp.gate_proj.weight",
        up="mlp.up_proj.weight",
        down="mlp.down_proj.weight",
        attn_norm="input_layernorm.weight",
        mlp_norm="post_attention_layernorm.weight",
        final_norm="norm.weight",
        unembed="@lm_head.weight",  # '@': no prefix
    ),
}


def _name(n: dict, key: str, i: int | None = None) -> str:
    leaf = n[key]
    if leaf.startswith("@"):
        return leaf[1:]
    block = n["block"].format(i=i) if i is not None else ""
    return n["prefix"] + block + leaf


def _mapping(cfg: TransformerConfig, naming: str):
    """(our param path, HF names, transform from the HF arrays to ours) for every parameter."""
    n = NAMINGS[naming]
    d, h, k, hd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim

    def qkv(wq, wk, wv):  # `fuse_qkv` in numpy: the host copy is placed sharded by `put`
        q = wq.T.reshape(d, k, h // k, hd)
        return np.concatenate([q, wk.T.reshape(d, k, 1, hd), wv.T.reshape(d, k, 1, hd)], 2)

    out = [(("embed",), [_name(n, "embed")], lambda w: w)]
    for i in range(cfg.n_layers):
        b = ("blocks", i)
        out += [
            (b + ("attn", "wqkv"), [_name(n, x, i) for x in "qkv"], qkv),
            (b + ("attn", "wo"), [_name(n, "o", i)], lambda w: w.T.reshape(h, hd, d)),
            (
                b + ("mlp", "w_gate_up"),
                [_name(n, "gate", i), _name(n, "up", i)],
                lambda g, u: np.stack([g.T, u.T], 1),
            ),
            (b + ("mlp", "w_down"), [_name(n, "down", i)], lambda w: w.T),
            (b + ("attn_norm", "scale"), [_name(n, "attn_norm", i)], lambda w: w),
            (b + ("mlp_norm", "scale"), [_name(n, "mlp_norm", i)], lambda w: w),
        ]
    out.append((("final_norm", "scale"), [_name(n, "final_norm")], lambda w: w))
    if not cfg.tie_embeddings:
        out.append((("unembed",), [_name(n, "unembed")], lambda w: w.T))
    return out


def detect_naming(names) -> str:
    names = set(names)
    if any(s.startswith("model.transformer.") for s in names):
        return "llada"
    if any(s.startswith("model.layers.") or s == "model.embed_tokens.weight" for s in names):
        return "llama"
    raise ValueError(
        "unrecognised checkpoint naming (expected LLaDA `model.transformer.*` or "
        "Llama `model.layers.*`)"
    )


def _files(path: str) -> list[str]:
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    else:
        files = [path] if os.path.exists(path) else []
    if not files:
        raise FileNotFoundError(
            f"no .safetensors files at {path!r}; download the HF checkpoint (e.g. "
            "GSAI-ML/LLaDA-8B-Instruct) yourself and point to its directory"
        )
    return files


def load_hf_checkpoint(
    path: str,
    cfg: TransformerConfig,
    *,
    naming: str = "auto",
    put: Callable[[tuple, jax.Array, nnx.Param], jax.Array] | None = None,
) -> Transformer:
    """Builds a `Transformer(cfg)` holding the weights of an HF safetensors checkpoint.

    Args:
      path: a `.safetensors` file or a directory of shards.
      cfg: architecture (must match the checkpoint; mismatches raise naming the tensor).
      naming: "llada", "llama" or "auto".
      put: optional `(path, array, abstract_param) -> array` placing each tensor (e.g.
        `jax.device_put(a, sharding)` with `models.sharding.state_shardings`); default: cast to
        `cfg.param_dtype` on the default device. Tensors are read one at a time.

    Returns:
      The model (no random initialisation is run: parameters are built abstractly).
    """
    from safetensors import safe_open

    files = _files(path)
    index = {}
    for f in files:
        with safe_open(f, framework="numpy") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                index[key] = f
    naming = detect_naming(index) if naming == "auto" else naming
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    pd = as_dtype(cfg.param_dtype)
    flat = dict(nnx.to_flat_state(state))
    for our, hfs, fn in _mapping(cfg, naming):
        ws = []
        for hf in hfs:
            if hf not in index:
                raise KeyError(
                    f"checkpoint {path!r} has no tensor {hf!r} (for {'.'.join(map(str, our))})"
                )
            with safe_open(index[hf], framework="numpy") as fh:
                w = fh.get_tensor(hf)
            ws.append(np.asarray(w, np.float32) if w.dtype.kind == "V" else w)
        try:
            w = fn(*ws)
        except (ValueError, TypeError) as e:  # a reshape that cannot fit: wrong architecture
            shapes = ", ".join(f"{hf} {tuple(x.shape)}" for hf, x in zip(hfs, ws, strict=True))
            raise ValueError(
                f"tensor(s) {shapes} do not fit {'.'.join(map(str, our))} of this config ({e})"
            ) from e
        var = flat[our]
        want = tuple(var.get_value().shape)
        if tuple(w.shape) != want:
            raise ValueError(
                f"tensor(s) {', '.join(map(repr, hfs))} have shape {tuple(w.shape)} after "
                f"mapping, expected {want} for {'.'.join(map(str, our))}"
            )
        arr = put(our, jnp.asarray(w, pd), var) if put is not None else jnp.asarray(w, pd)
        var.set_value(arr)
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def export_hf(model: Transformer, naming: str = "llama") -> dict[str, np.ndarray]:
    """Our parameters under HF names (the inverse of the mapping; used by tests and export)."""
    cfg = model.cfg
    flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    d = cfg.d_model

    def qkv(w):
        return [x.reshape(d, -1).T for x in split_qkv(w)]

    inverse = {
        "wqkv": qkv,
        "wo": lambda w: [w.reshape(-1, d).T],
        "w_gate_up": lambda w: [w[:, 0].T, w[:, 1].T],
        "w_down": lambda w: [w.T],
        "unembed": lambda w: [w.T],
    }
    out = {}
    for our, hfs, _ in _mapping(cfg, naming):
        w = np.asarray(flat[our].get_value(), np.float32)
        ws = inverse.get(our[-1], lambda a: [a])(w)
        out.update({hf: np.ascontiguousarray(x) for hf, x in zip(hfs, ws, strict=True)})
    return out
