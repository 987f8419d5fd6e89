"""Writes transformer_pre_fusion.npz: outputs of the pre-fusion Transformer (main @ 63c9429).

Run once, from a checkout of that commit: `python tests/models/data/make_pre_fusion_ref.py OUT.npz`
(then only the `causal/` params, grads and hidden states were kept, to stay small). The fused
model must reproduce these numbers for the same seed (tests/models/test_transformer.py).
"""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.transformer import Transformer, TransformerConfig

CFG = TransformerConfig(vocab_size=37, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48)
out = {}
toks = np.asarray(jax.random.randint(jax.random.key(5), (2, 9), 1, 37))
mask = np.ones((2, 9), bool)
mask[0, :3] = False  # left padding
rmask = np.ones((2, 9), bool)
rmask[1, 6:] = False  # right padding
out["tokens"], out["mask_left"], out["mask_right"] = toks, mask, rmask
cases = {
    "causal": dict(causal=True),
    "bidir": dict(causal=False),
    "causal_scan": dict(causal=True, scan_layers=True),
    "bidir_scan_remat": dict(causal=False, scan_layers=True, remat="full"),
    "tied_mha": dict(causal=True, n_kv_heads=4, tie_embeddings=True),
}
for name, kw in cases.items():
    m = Transformer(dataclasses.replace(CFG, **kw), rngs=nnx.Rngs(3))
    for mname, mk in (("left", mask), ("right", rmask)):
        o = m(jnp.asarray(toks), mask_bt=jnp.asarray(mk), return_hidden=True)
        out[f"{name}/logits_{mname}"] = np.asarray(o.logits)
        out[f"{name}/hidden_{mname}"] = np.asarray(o.hidden)
    gd, p = nnx.split(m, nnx.Param)

    def loss(p):
        lg = nnx.merge(gd, p)(jnp.asarray(toks), mask_bt=jnp.asarray(mask)).logits  # noqa: B023
        lp = jax.nn.log_softmax(lg)[:, :-1]
        return -jnp.sum(
            jnp.take_along_axis(lp, jnp.asarray(toks)[:, 1:, None], -1) * mask[:, 1:, None]
        )

    g = jax.grad(loss)(p)
    for path, v in nnx.to_flat_state(p):
        out[f"{name}/param/" + "/".join(map(str, path))] = np.asarray(v.get_value())
    for path, v in nnx.to_flat_state(g):
        out[f"{name}/grad/" + "/".join(map(str, path))] = np.asarray(v.get_value())
    if name == "causal":  # KV-cache decoding: prefill 4 then 5 single steps
        cache = m.init_cache(2, 12)
        o = m(jnp.asarray(toks[:, :4]), mask_bt=jnp.asarray(mask[:, :4]), cache=cache)
        steps, cache = [o.logits], o.cache
        for i in range(4, 9):
            o = m(jnp.asarray(toks[:, i : i + 1]), cache=cache)
            cache = o.cache
            steps.append(o.logits)
        out["causal/decode_logits"] = np.asarray(jnp.concatenate(steps, 1))
np.savez_compressed(sys.argv[1], **out)
print(len(out), "arrays")
