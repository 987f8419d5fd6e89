"""HF safetensors import: a tiny checkpoint written in LLaDA and Llama naming loads back exactly."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from models import convert
from models.transformer import Transformer, TransformerConfig

CFG = TransformerConfig(
    vocab_size=11,
    d_model=16,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_ff=24,
    max_len=16,
    causal=False,
)


@pytest.mark.parametrize("naming", ["llada", "llama"])
def test_roundtrip_logits(tmp_path, naming):
    src = Transformer(CFG, rngs=nnx.Rngs(3))
    tensors = convert.export_hf(src, naming)
    # Shard the checkpoint in two files, as HF does.
    keys = sorted(tensors)
    save_file(
        {k: tensors[k] for k in keys[::2]}, str(tmp_path / "model-00001-of-00002.safetensors")
    )
    save_file(
        {k: tensors[k] for k in keys[1::2]}, str(tmp_path / "model-00002-of-00002.safetensors")
    )
    assert convert.detect_naming(tensors) == naming
    got = convert.load_hf_checkpoint(str(tmp_path), CFG)
    tok = jnp.asarray([[1, 5, 3, 3, 7, 2]])
    np.testing.assert_allclose(
        np.asarray(got(tok).logits), np.asarray(src(tok).logits), rtol=1e-5, atol=1e-5
    )


def test_hf_layout_is_torch_linear(tmp_path):
    src = Transformer(CFG, rngs=nnx.Rngs(0))
    t = convert.export_hf(src, "llada")
    # torch Linear weights are [out, in]: q_proj is [H*hd, D], ff_out (down) is [D, F].
    assert t["model.transformer.blocks.0.q_proj.weight"].shape == (16, 16)
    assert t["model.transformer.blocks.0.k_proj.weight"].shape == (8, 16)
    assert t["model.transformer.blocks.1.ff_out.weight"].shape == (16, 24)
    assert t["model.transformer.ff_out.weight"].shape == (11, 16)
    np.testing.assert_array_equal(
        t["model.transformer.blocks.0.ff_proj.weight"],
        np.asarray(src.blocks[0].mlp.w_gate_up[...])[:, 0].T,
    )
    # q_proj rows are heads in order (head n = kv head n // (H/K)), each head_dim rows long.
    from models.transformer import split_qkv

    wq, wk, _ = split_qkv(np.asarray(src.blocks[0].attn.wqkv[...]))
    np.testing.assert_array_equal(
        t["model.transformer.blocks.0.q_proj.weight"], wq.reshape(16, 16).T
    )
    np.testing.assert_array_equal(
        t["model.transformer.blocks.0.k_proj.weight"], wk.reshape(16, 8).T
    )


def test_errors_name_the_tensor(tmp_path):
    src = Transformer(CFG, rngs=nnx.Rngs(0))
    t = convert.export_hf(src, "llama")
    t.pop("model.layers.1.mlp.up_proj.weight")
    save_file(t, str(tmp_path / "m.safetensors"))
    with pytest.raises(KeyError, match="model.layers.1.mlp.up_proj.weight"):
        convert.load_hf_checkpoint(str(tmp_path / "m.safetensors"), CFG)
    with pytest.raises(FileNotFoundError, match="safetensors"):
        convert.load_hf_checkpoint(str(tmp_path / "missing"), CFG)
    t = convert.export_hf(src, "llama")
    bigger = TransformerConfig(**{**CFG.__dict__, "d_ff": 32})
    save_file(t, str(tmp_path / "m.safetensors"))
    with pytest.raises(ValueError, match="gate_proj"):
        convert.load_hf_checkpoint(str(tmp_path / "m.safetensors"), bigger)


def test_hf_import_matches_the_pre_fusion_export(tmp_path):
    """HF tensors exported by the pre-fusion code (separate projections) load into the fused
    model and give the logits the pre-fusion model gave."""
    import os

    ref = np.load(os.path.join(os.path.dirname(__file__), "data", "transformer_pre_fusion.npz"))
    cfg = TransformerConfig(vocab_size=37, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48)
    p = {k[len("causal/param/") :]: v for k, v in ref.items() if k.startswith("causal/param/")}
    t = {"model.embed_tokens.weight": p["embed"], "model.norm.weight": p["final_norm/scale"]}
    t["lm_head.weight"] = p["unembed"].T
    for i in range(2):
        b, L = f"blocks/{i}/", f"model.layers.{i}."
        for ours, hf in [("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj")]:
            t[L + f"self_attn.{hf}.weight"] = p[b + "attn/" + ours].reshape(32, -1).T
        t[L + "self_attn.o_proj.weight"] = p[b + "attn/wo"].reshape(-1, 32).T
        for ours, hf in [("w_gate", "gate_proj"), ("w_up", "up_proj"), ("w_down", "down_proj")]:
            t[L + f"mlp.{hf}.weight"] = p[b + "mlp/" + ours].T
        t[L + "input_layernorm.weight"] = p[b + "attn_norm/scale"]
        t[L + "post_attention_layernorm.weight"] = p[b + "mlp_norm/scale"]
    save_file({k: np.ascontiguousarray(v) for k, v in t.items()}, str(tmp_path / "m.safetensors"))
    got = convert.load_hf_checkpoint(str(tmp_path / "m.safetensors"), cfg)
    mask = ref["mask_right"]
    logits = got(jnp.asarray(ref["tokens"]), mask_bt=jnp.asarray(mask)).logits
    np.testing.assert_allclose(
        np.asarray(logits)[mask], ref["causal/logits_right"][mask], atol=2e-5
    )
    for k, v in convert.export_hf(got, "llama").items():
        np.testing.assert_array_equal(v, t[k])  # and exports the same tensors back
