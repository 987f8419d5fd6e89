"""Tests for data/glue.py: generated tasks carry the labels they claim, and the GLUE TSV loader
reads the public layout (fixture under tests/peft/fixtures/glue)."""

import os

import numpy as np
import pytest

from data import glue

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "glue")
VOCAB = glue.Vocab()


def _sentences(tokens):
    """Splits one example into its sentences (lists of words) at [SEP]."""
    words, out = [], []
    for t in tokens[1:]:
        if t == glue.SEP:
            out.append(words)
            words = []
        elif t != glue.PAD:
            words.append(VOCAB.itos[t])
    return out


def _lemma(word):
    for suf in ("es", "s"):
        if word.endswith(suf) and word[: -len(suf)] in VOCAB.stoi:
            return word[: -len(suf)]
    return word


def _subject(words):
    """Subject noun lemma: the word before the verb (first word that is a verb form)."""
    nouns = {n for nouns, _, _ in glue._TOPICS.values() for n in nouns}
    return next(_lemma(w) for w in words if _lemma(w) in nouns)


@pytest.mark.parametrize("task", glue.TASKS)
def test_tasks_are_deterministic_and_balanced(task):
    a = glue.make_task(task, 200, seed=3)
    b = glue.make_task(task, 200, seed=3)
    c = glue.make_task(task, 200, seed=4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["tokens"], c["tokens"])
    assert a["tokens"].shape == (200, 24) and a["mask"].dtype == bool
    np.testing.assert_array_equal(a["mask"], a["tokens"] != glue.PAD)
    assert np.all(a["tokens"][:, 0] == glue.CLS)
    spec = glue.TASK_SPECS[task]
    if spec.n_classes:
        counts = np.bincount(a["label"], minlength=spec.n_classes)
        assert counts.min() > 200 / spec.n_classes / 2
    else:
        assert a["label"].min() >= 0 and a["label"].max() <= 5 and len(np.unique(a["label"])) > 3


def test_pair_label_is_same_subject_noun():
    d = glue.make_task("pair", 100, seed=0)
    for tokens, y in zip(d["tokens"], d["label"], strict=True):
        first, second = _sentences(tokens)
        assert (_subject(first) == _subject(second)) == bool(y)


def test_agree_label_is_subject_verb_agreement():
    d = glue.make_task("agree", 100, seed=0)
    verbs = {v for _, vs, _ in glue._TOPICS.values() for v in vs}
    nouns = {n for ns, _, _ in glue._TOPICS.values() for n in ns}
    for tokens, y in zip(d["tokens"], d["label"], strict=True):
        (words,) = _sentences(tokens)
        noun = next(w for w in words if _lemma(w) in nouns)
        verb = next(w for w in words if w in verbs or _lemma(w) in verbs)
        noun_plural, verb_plural = _lemma(noun) != noun, verb in verbs
        assert (noun_plural == verb_plural) == bool(y), words


def test_topic_label_is_majority_topic_on_average():
    d = glue.make_task("topic", 300, seed=1)
    topic_of = {}
    for t, (nouns, verbs, _adjs) in enumerate(glue._TOPICS.values()):
        for w in nouns + verbs:
            topic_of[w] = t
    hits = []
    for tokens, y in zip(d["tokens"], d["label"], strict=True):
        (words,) = _sentences(tokens)
        ts = [topic_of[_lemma(w)] for w in words if _lemma(w) in topic_of]
        hits.append(np.bincount(ts, minlength=4).argmax() == y)
    assert 0.6 < np.mean(hits) < 1.0  # mostly on topic, but noisy


def test_score_golden():
    assert glue.score("accuracy", np.array([1, 0, 1]), np.array([1, 1, 1])) == pytest.approx(
        200 / 3
    )
    # MCC of tp=2, tn=1, fp=1, fn=0: (2 - 0) / sqrt(3 * 2 * 2 * 1)
    mcc = glue.score("mcc", np.array([1, 1, 1, 0]), np.array([1, 1, 0, 0]))
    assert mcc == pytest.approx(100 * 2 / np.sqrt(12))
    assert glue.score("pearson", np.array([1.0, 2, 3]), np.array([2.0, 4, 6])) == pytest.approx(100)


def test_load_glue_tsv_public_layout():
    sst = glue.load_glue_tsv(FIXTURE, "SST-2")
    assert sst["text_b"] is None and sst["label"].tolist() == [1, 0, 1]
    assert sst["text_a"][2] == 'it \'s a "charming" film '  # quotes kept verbatim (QUOTE_NONE)
    mrpc = glue.load_glue_tsv(FIXTURE, "MRPC")
    assert mrpc["label"].tolist() == [1, 0]
    assert mrpc["text_b"][0] == "A dog runs near the market."
    sts = glue.load_glue_tsv(FIXTURE, "STS-B")
    np.testing.assert_allclose(sts["label"], [4.75, 0.0])
    cola = glue.load_glue_tsv(FIXTURE, "CoLA")  # header-less
    assert cola["label"].tolist() == [1, 0, 1] and cola["text_a"][1] == "the dogs runs ."
    rte = glue.load_glue_tsv(FIXTURE, "RTE")
    assert rte["label"].tolist() == [0, 1]


def test_encode_glue_uses_grammar_vocab_and_unk():
    enc = glue.encode_glue(VOCAB, glue.load_glue_tsv(FIXTURE, "MRPC"), max_len=16)
    ids = enc["tokens"][0].tolist()
    assert ids[0] == glue.CLS and ids.count(glue.SEP) == 2
    assert VOCAB.decode(ids).startswith("[CLS] the dog runs near")
    assert glue.UNK in enc["tokens"][1]  # "bread" is not in the grammar
    np.testing.assert_array_equal(enc["label"], [1, 0])


def test_missing_glue_file_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="SST-2/dev.tsv"):
        glue.load_glue_tsv(str(tmp_path), "SST-2")
