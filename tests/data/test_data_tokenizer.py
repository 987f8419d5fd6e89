"""Char and SentencePiece tokenizers: round trips, special ids, save/load, determinism."""

import pytest

from data import tasks
from data.tokenizer import CharTokenizer, SentencePieceTokenizer, load_tokenizer


@pytest.fixture(scope="module")
def corpus():
    task = tasks.get("countdown")
    return [task.prompt(e, "paper") + task.target(e, "paper") for e in task.generate("t", 200, 0)]


@pytest.fixture(scope="module")
def sp(corpus):
    return SentencePieceTokenizer.train(corpus, vocab_size=400)


def _check_specials(tok):
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.mask_id) == (0, 1, 2, 3)
    ids = tok.encode("12+3", add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert max(ids) < tok.vocab_size
    # decode stops at eos and skips pad/bos/mask
    assert tok.decode([tok.bos_id, *ids[1:-1], tok.mask_id, tok.eos_id, *ids[1:3]]) == "12+3"
    assert tok.decode([tok.pad_id, *tok.encode("7")]) == "7"


def test_char_tokenizer(tmp_path):
    tok = CharTokenizer()
    _check_specials(tok)
    text = "<answer>\n88/(46-2)\n</answer>\t~"
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("é") == [tok.unk_id]
    tok.save(str(tmp_path / "char.json"))
    again = load_tokenizer(str(tmp_path / "char.json"))
    assert isinstance(again, CharTokenizer) and again.encode(text) == tok.encode(text)


def test_sentencepiece_round_trip_and_save(sp, corpus, tmp_path):
    _check_specials(sp)
    for text in [corpus[0], "héllo ☃ 123\n\tx  y", ""]:
        assert sp.decode(sp.encode(text)) == text
    assert len(sp.encode(corpus[0])) < len(corpus[0]) / 2  # learned merges compress
    sp.save(str(tmp_path / "sp.model"))
    again = load_tokenizer(str(tmp_path / "sp.model"))
    assert again.encode(corpus[1]) == sp.encode(corpus[1])


def test_sentencepiece_training_deterministic(sp, corpus):
    again = SentencePieceTokenizer.train(corpus, vocab_size=400)
    assert [again._sp.id_to_piece(i) for i in range(again.vocab_size)] == [
        sp._sp.id_to_piece(i) for i in range(sp.vocab_size)
    ]
