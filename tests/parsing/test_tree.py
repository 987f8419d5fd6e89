"""TOP trees and data loading: round trips, clear errors on malformed strings, the TSV fixture."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parsing.data import HELD_OUT, generate, load_topv2, nestings, read_tsv, write_tsv
from parsing.tree import (
    LEAF,
    Node,
    TopParseError,
    decouple,
    fill,
    find_spans,
    parse_top,
    skeleton,
    to_top,
    words,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
EXAMPLE = (
    "[IN:GET_EVENT [SL:CATEGORY_EVENT Art fairs ] [SL:DATE_TIME this weekend ] in "
    "[SL:LOCATION Detroit ] ]"
)


def test_parse_print_example():
    t = parse_top(EXAMPLE)
    assert to_top(t) == EXAMPLE
    assert words(t) == ["Art", "fairs", "this", "weekend", "in", "Detroit"]
    assert to_top(decouple(t)) == EXAMPLE.replace(" in ", " ")
    skel, texts = skeleton(t)
    assert skel == (
        "IN:GET_EVENT",
        (("SL:CATEGORY_EVENT", (LEAF,)), ("SL:DATE_TIME", (LEAF,)), ("SL:LOCATION", (LEAF,))),
    )
    assert find_spans(words(t), texts) == [(0, 1), (2, 3), (5, 5)]
    assert to_top(fill(skel, texts)) == to_top(decouple(t))


def test_unspaced_brackets_parse():
    assert to_top(parse_top("[IN:A [SL:B x y]]")) == "[IN:A [SL:B x y ] ]"


@pytest.mark.parametrize(
    "bad, msg",
    [
        ("", "empty"),
        ("[IN:A [SL:B x ]", "never closed"),
        ("[IN:A ] ]", "after the root"),
        ("[IN:A ] extra", "after the root"),
        ("[SL:A x ]", "root must be an intent"),
        ("[IN:A [IN:B ] ]", "directly under intent"),
        ("[IN:A [SL:B [SL:C x ] ] ]", "directly under slot"),
        ("[GET_WEATHER x ]", "IN:NAME or SL:NAME"),
        ("[IN: x ]", "IN:NAME or SL:NAME"),
        ("[ ]", "followed by a label"),
        ("hello [IN:A ]", "must start with"),
        ("[IN:A [SL:B ] ]", "is empty"),
    ],
)
def test_malformed_strings_give_clear_errors(bad, msg):
    with pytest.raises(TopParseError, match=msg):
        parse_top(bad)


def _trees(depth):
    word = st.sampled_from(["a", "b", "c"])
    label = st.sampled_from(["X", "Y"])
    if depth == 0:
        slot = st.builds(
            lambda lab, ws: Node("SL:" + lab, tuple(ws)),
            label,
            st.lists(word, min_size=1, max_size=2),
        )
    else:
        slot = st.one_of(
            st.builds(
                lambda lab, ws: Node("SL:" + lab, tuple(ws)),
                label,
                st.lists(word, min_size=1, max_size=2),
            ),
            st.builds(lambda lab, i: Node("SL:" + lab, (i,)), label, _trees(depth - 1)),
        )
    kids = st.lists(st.one_of(word, slot), max_size=3)
    return st.builds(lambda lab, k: Node("IN:" + lab, tuple(k)), label, kids)


@settings(max_examples=60, deadline=None)
@given(_trees(2))
def test_print_parse_round_trip(tree):
    assert parse_top(to_top(tree)) == tree
    skel, texts = skeleton(tree)
    assert fill(skel, texts) == decouple(tree)


def test_generated_splits_and_compositional_holdout():
    d = generate({"train": 300, "test": 50, "compositional": 30}, seed=1)
    assert {k: len(v) for k, v in d.items()} == {"train": 300, "test": 50, "compositional": 30}
    held = [f"[SL:{s} [IN:{i}" for s, i in HELD_OUT]
    for ex in d["train"] + d["test"]:
        top = to_top(ex.tree)
        assert parse_top(top) == ex.tree and not any(h in top for h in held)
        assert list(ex.tokens) == words(ex.tree)
    assert all(any(h in to_top(ex.tree) for h in held) for ex in d["compositional"])


def test_compositional_split_recombines_parts_seen_in_training():
    """Each held-out (slot, sub-intent) pair is new only as a pair (issue 15.9).

    The slot holds some other sub-intent in training and the sub-intent is nested under some other
    slot, so the split tests recombination; otherwise it is unlearnable by construction.
    """
    seen = set()
    for ex in generate({"train": 2000}, seed=0)["train"]:
        seen |= nestings(ex.tree)
    assert not (seen & HELD_OUT)
    for slot, intent in HELD_OUT:
        assert any(s == slot for s, _ in seen), f"{slot} never holds a sub-intent in training"
        assert any(i == intent for _, i in seen), f"{intent} is never nested in training"


def test_tsv_fixture_loads():
    splits = load_topv2(FIXTURES)
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "valid": 2, "test": 2}
    ex = splits["train"][0]
    assert ex.domain == "event" and ex.tokens == tuple(EXAMPLE_WORDS)
    assert to_top(ex.tree) == EXAMPLE
    assert len(load_topv2(FIXTURES, domains=["weather"])["train"]) == 2


EXAMPLE_WORDS = ["Art", "fairs", "this", "weekend", "in", "Detroit"]


def test_tsv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="put the TOPv2 release files"):
        load_topv2(str(tmp_path))
    bad = tmp_path / "x_train.tsv"
    bad.write_text("domain\tutterance\tsemantic_parse\nweather\thi\t[IN:A [SL:B hi ]\n")
    with pytest.raises(ValueError, match=r"x_train.tsv:2: .*never closed"):
        read_tsv(str(bad))
    assert read_tsv(str(bad), strict=False) == []


def test_tsv_write_read_round_trip(tmp_path):
    exs = generate({"train": 20}, seed=3)["train"]
    write_tsv(str(tmp_path / "gen_train.tsv"), exs)
    assert read_tsv(str(tmp_path / "gen_train.tsv")) == [
        type(ex)("generated", ex.tokens, ex.tree) for ex in exs
    ]
