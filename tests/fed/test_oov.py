"""Tests for fed/oov.py and fed/data.py: personal vocabulary, encodings, EMR@k golden cases."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fed import data, oov
from models.word_lm import WordLM, WordLMConfig


def test_personal_vocab_ranks_counts_and_excludes_vocab():
    sents = [["call", "zed", "zed", "amy"], ["amy", "bob", "zed", "call"], ["amy", "cat"]]
    # counts among OOV: zed 3, amy 3, bob 1, cat 1; ties broken alphabetically
    assert oov.personal_vocab(sents, {"call"}, k_max=3, min_count=1) == ["amy", "zed", "bob"]
    assert oov.personal_vocab(sents, {"call"}, k_max=9, min_count=2) == ["amy", "zed"]
    assert oov.personal_vocab(sents, {"call", "amy"}, k_max=1, min_count=1) == ["zed"]


def test_expanded_encoding():
    vocab = list(data.SPECIALS) + ["call", "meet"]
    w2i = {w: i for i, w in enumerate(vocab)}
    ids = oov.expanded_ids(w2i, ["zed", "amy"])
    ex = oov.lm_examples([["call", "amy", "and", "zed"]], ids, max_len=6)
    # <s> call amy and zed </s> pad ; 'and' is OOV and not personal -> <unk>
    np.testing.assert_array_equal(ex["x"][0], [2, 4, 7, 1, 6, 3])
    np.testing.assert_array_equal(ex["y"][0], [4, 7, 1, 6, 3, 0])
    base = oov.lm_examples([["call", "amy", "and", "zed"]], w2i, max_len=6)
    np.testing.assert_array_equal(base["y"][0], [4, 1, 1, 1, 3, 0])


def test_emr_counts_golden_with_ties_unk_and_eos():
    unk, eos = 1, 3
    logits = jnp.array(
        [
            [
                [0.0, 0.0, 0.0, 0.0, 5.0, 4.0, 4.0, 4.0],  # top3 = 4, 5, 6 (tie 5/6/7: lower id)
                [0.0, 9.0, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0],  # top3 = 1, 7, 4 ; target unk: a miss
                [0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0],  # target eos: not counted
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # pad target: not counted
            ]
        ]
    )
    y = jnp.array([[6, 1, 3, 0]])
    c = oov.emr_counts(logits, y, y > 0, unk, eos)
    assert {k: int(v) for k, v in c.items()} == {"top1": 0, "top3": 1, "tokens": 2, "oov": 1}
    y2 = jnp.array([[7, 7, 3, 0]])  # 7 is tied with 5 and 6 but has the highest id: not in top3
    c2 = oov.emr_counts(logits, y2, y2 > 0, unk, eos)
    assert int(c2["top3"]) == 1 and int(c2["top1"]) == 0  # second row: 7 is 2nd


def test_init_adapter_char_and_random():
    vocab = list(data.SPECIALS) + ["call", "alra"]
    cfg = WordLMConfig(vocab_size=len(vocab), char_dim=4, filters=(4, 4, 4), d_emb=8, hidden=8)
    model = WordLM(cfg, data.chars_of(vocab, 12), rngs=nnx.Rngs(0))
    ad, valid = oov.init_adapter(model, ["bob", "amy"], 4, "char", jax.random.key(0))
    np.testing.assert_array_equal(valid, [True, True, False, False])
    want = model.embed_words(jnp.asarray(data.chars_of(["bob", "amy"], 12)))
    np.testing.assert_allclose(ad["emb"][:2], want, rtol=1e-6)
    assert float(jnp.abs(ad["emb"][2:]).max()) == 0.0
    rnd, _ = oov.init_adapter(model, ["bob", "amy"], 4, "random", jax.random.key(0))
    assert rnd["emb"].shape == (4, 8) and not np.allclose(rnd["emb"][:2], want)


def test_generated_corpus_private_words_stay_out_of_vocab():
    corpus = data.generate_corpus(num_clients=20, seed=3, sentences_per_client=(20, 30))
    again = data.generate_corpus(num_clients=20, seed=3, sentences_per_client=(20, 30))
    assert corpus.clients == again.clients
    train = [data.split_by_time(s)[0] for s in corpus.clients]
    vocab = set(data.build_vocab(train, 200, min_clients=3))
    private = {w for ws in corpus.private_words for w in ws}
    assert not (private & vocab)
    # the private words do occur, and only in their owner's text
    owner = {w: u for u, ws in enumerate(corpus.private_words) for w in ws}
    used = {w: u for u, sents in enumerate(corpus.clients) for s in sents for w in s if w in owner}
    assert used and all(owner[w] == u for w, u in used.items())
    tr, te = data.split_by_time(list(range(10)), 0.8)
    assert tr == list(range(8)) and te == [8, 9]


def test_jsonl_loader(tmp_path):
    (tmp_path / "b.jsonl").write_text(
        '{"text": "Later one", "time": 2}\n{"text": "first", "time": 1}\n'
    )
    (tmp_path / "a.jsonl").write_text('{"text": "hello world"}\n')
    corpus = data.load_jsonl_clients(tmp_path)
    assert corpus.clients == [[["hello", "world"]], [["first"], ["later", "one"]]]
    empty = tmp_path / "empty"
    empty.mkdir()
    try:
        data.load_jsonl_clients(empty)
    except FileNotFoundError as e:
        assert "jsonl" in str(e)
    else:
        raise AssertionError("expected FileNotFoundError")


def test_evaluation_uses_the_trained_personal_biases():
    """The personal vocabulary biases b_V are part of the model that `final` scores (issue 15.1)."""
    vocab = list(data.SPECIALS) + ["call", "meet", "alra"]
    cfg = WordLMConfig(vocab_size=len(vocab), char_dim=4, filters=(4, 4, 4), d_emb=8, hidden=8)
    model = WordLM(cfg, data.chars_of(vocab, 12), rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ad, valid = oov.init_adapter(model, ["zed"], 2, "char", jax.random.key(0))
    # a personal bias that makes "meet" (id 5) the only plausible next word
    ad = {**ad, "bias_v": ad["bias_v"].at[5].set(1e4)}
    x = jnp.array([[2, 4, 4, 4]])
    y = jnp.array([[5, 5, 5, 5]])
    test = {"x": x, "y": y, "valid": jnp.asarray(valid)}
    work = oov.make_personalise_work(
        graphdef, rest, adapter=True, lr=0.0, train_shared=False, adapter_lr=0.0
    )
    cstate = {"shared": params, "personal": ad}
    counts = work.final(params, cstate, test).metrics
    assert int(counts["tokens"]) == 4 and int(counts["top1"]) == 4
    # training and evaluation score the same model
    loss_fn = oov.make_loss_fn(graphdef, rest, adapter=True)
    batch = {"x": x, "y": y, "valid": jnp.asarray(valid)[None]}
    nll, n = loss_fn(params, ad, batch, jnp.array([True]))
    assert float(nll / n) < 1e-3
