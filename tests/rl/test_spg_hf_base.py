"""The `llada8b` path at toy scale: an HF-format checkpoint directory (LLaDA-named safetensors and a
`tokenizer.json` with LLaDA's special tokens), written by the test, is the SPG base model."""

import json
import os

import jax
import numpy as np
import pytest
from child_env import child_env
from flax import nnx
from safetensors.numpy import save_file

from configs import spg as spg_config
from data import tasks
from data.tokenizer import LLADA_SPECIALS, HFTokenizer, load_tokenizer
from models import convert
from models.transformer import Transformer, TransformerConfig

HEADERS = ["<|start_header_id|>", "<|end_header_id|>"]


def _write_tokenizer(path, corpus):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=list(LLADA_SPECIALS.values()) + HEADERS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    tok.save(os.path.join(path, "tokenizer.json"))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("llada_tiny")
    task = tasks.get("sudoku4")
    exs = task.generate("train", 64, 0)
    corpus = [task.prompt(e, "compact") + " " + task.target(e, "compact") for e in exs]
    _write_tokenizer(str(d), corpus)
    return str(d)


def test_hf_tokenizer_specials_and_chat(hf_dir):
    tok = HFTokenizer(hf_dir)
    ids = {tok._tok.token_to_id(t) for t in LLADA_SPECIALS.values()}
    assert {tok.bos_id, tok.eos_id, tok.mask_id} <= ids and len(ids) == 4
    assert tok.pad_id == tok.eos_id
    text = tok.chat_prompt("sudoku 1234")
    assert text.startswith("<|start_header_id|>user") and "sudoku 1234<|eot_id|>" in text
    enc = tok.encode(text, add_bos=True)
    assert enc[0] == tok.bos_id
    # Special strings in the template are single ids, not spelt out.
    assert enc.count(tok._tok.token_to_id("<|eot_id|>")) == 1
    # decode stops at eot or eos and drops special tokens.
    body = tok.encode("4321 1234")
    eot = tok._tok.token_to_id("<|eot_id|>")
    assert tok.decode(body + [eot] + tok.encode("99")) == "4321 1234"
    assert tok.decode([tok.mask_id] + body + [tok.eos_id, *body]) == "4321 1234"


def test_hf_tokenizer_save_load_and_errors(hf_dir, tmp_path):
    tok = HFTokenizer(hf_dir)
    tok.save(str(tmp_path / "tok.json"))
    back = load_tokenizer(str(tmp_path / "tok.json"))
    assert isinstance(back, HFTokenizer)
    assert back.encode(back.chat_prompt("sudoku 12"), add_bos=True) == tok.encode(
        tok.chat_prompt("sudoku 12"), add_bos=True
    )
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        HFTokenizer(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="<nope>"):
        HFTokenizer(hf_dir, specials={**LLADA_SPECIALS, "mask": "<nope>"})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid HF tokenizer"):
        HFTokenizer(str(bad))


def _tiny_config(hf_dir):
    c = spg_config.get_config("tiny")
    tok = HFTokenizer(hf_dir)
    c.model.vocab_size = tok.vocab_size
    c.rl.init_weights = hf_dir
    c.rl.max_prompt_len = 64  # the chat template adds ~10 tokens
    c.model.max_len = 64 + 2 * c.rl.gen_len
    return c, tok


def test_runner_loads_hf_base_and_trains(hf_dir, tmp_path):
    from rl.run_spg import load_base_model, run

    c, tok = _tiny_config(hf_dir)
    cfg = TransformerConfig.from_config(c.model, vocab_size=tok.vocab_size, causal=False)
    src = Transformer(cfg, rngs=nnx.Rngs(7))
    save_file(convert.export_hf(src, "llada"), os.path.join(hf_dir, "model.safetensors"))

    model, tok2 = load_base_model(c)
    assert tok2.mask_id == tok.mask_id
    x = jax.random.randint(jax.random.key(0), (2, 12), 0, tok.vocab_size)
    np.testing.assert_allclose(
        np.asarray(model(x).logits), np.asarray(src(x).logits), rtol=1e-5, atol=1e-5
    )
    assert isinstance(model.embed.get_value().sharding, jax.sharding.NamedSharding)

    wd = str(tmp_path / "run")
    c.rl.skip_flat_batches = False  # train even when the toy model earns no reward
    out = run(c, wd)
    assert not os.path.exists(os.path.join(wd, "sft"))  # no warm-start stage with HF weights
    assert np.isfinite(out["rl/final_reward_mean"])
    rows = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
    assert any("rl/reward_mean" in r for r in rows)


def test_runner_missing_weights_dir_is_clear(tmp_path):
    from rl.run_spg import run

    c = spg_config.get_config("tiny")
    c.rl.init_weights = str(tmp_path / "LLaDA-8B-Instruct")
    with pytest.raises(FileNotFoundError, match="LLaDA-8B-Instruct"):
        run(c, str(tmp_path / "wd"))


SHARDED_LOAD = r"""
import os, sys
flags = os.environ.get("XLA_FLAGS", "")  # the suite's cheap-compile flags, plus 4 devices
os.environ["XLA_FLAGS"] = flags + " --xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax, numpy as np
from flax import nnx
from safetensors.numpy import save_file
from configs import spg as spg_config
from models import convert
from models.transformer import Transformer, TransformerConfig
from rl.run_spg import load_base_model
from data.tokenizer import HFTokenizer

d = sys.argv[1]
c = spg_config.get_config("tiny")
c.rl.init_weights = d
c.mesh_shape = (1, -1, 1)  # the llada8b variant's: FSDP over every device
c.model.d_model = 32
cfg = TransformerConfig.from_config(c.model, vocab_size=HFTokenizer(d).vocab_size, causal=False)
src = Transformer(cfg, rngs=nnx.Rngs(1))
save_file(convert.export_hf(src, "llada"), os.path.join(d, "model.safetensors"))
model, _ = load_base_model(c)
emb = model.embed.get_value()
assert len(jax.devices()) == 4
assert "fsdp" in str(emb.sharding.spec), emb.sharding
assert len({s.device for s in emb.addressable_shards}) == 4
assert emb.addressable_shards[0].data.shape[1] == 32 // 4, emb.addressable_shards[0].data.shape
x = np.arange(24).reshape(2, 12) % cfg.vocab_size
np.testing.assert_allclose(np.asarray(model(x).logits), np.asarray(src(x).logits), atol=1e-5)
print("OK")
"""


def test_base_weights_are_fsdp_sharded_on_load(hf_dir, tmp_path):
    import shutil
    import subprocess
    import sys

    d = tmp_path / "ckpt"
    shutil.copytree(hf_dir, d)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(
        [sys.executable, "-c", SHARDED_LOAD, str(d)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_missing_checkpoint_dir_is_a_user_error(tmp_path):
    """A missing `rl.init_weights` is the user's to fix: launch.main prints it as one line."""
    from configs import spg as spg_config
    from models.errors import UserError
    from rl.run_spg import load_base_model

    c = spg_config.get_config("tiny")
    c.rl.init_weights = str(tmp_path / "nowhere")
    with pytest.raises(UserError, match="nowhere"):
        load_base_model(c)
