"""Tests for data/safe_eval.py: exact values, Python-eval parity (d1), limits, hostile text.

Times are CPU time of this thread (the machine is shared), garbage collection excluded.
"""

import contextlib
from fractions import Fraction

import pytest
from cpu_budget import cpu_budget, slow_collector
from hypothesis import given, settings
from hypothesis import strategies as st

from data import safe_eval
from data.safe_eval import EvalError, evaluate


@pytest.mark.parametrize(
    "text, value",
    [
        ("2*4-3", 5),
        ("(3+5)*2", 16),
        ("88/(46-2)", 2),
        ("1/3+1/6", Fraction(1, 2)),
        ("-3+10", 7),
        ("--3", 3),
        (" 7 - ( 2 * 3 ) ", 1),
        ("1-2-3", -4),  # left associative
        ("12/3/2", 2),
    ],
)
def test_values(text, value):
    assert evaluate(text) == value


@pytest.mark.parametrize(
    "text",
    ["2**3", "7//2", "1.5*2", "1/0", "(1+2", "1+2)", "()", "1 2", "2(3)", "", "a+1", "1e5", "٣+1"],
)
def test_fixed_mode_rejects(text):
    with pytest.raises(EvalError):
        evaluate(text)


# Expressions over the reference whitelist `[\d+\-*/().\s]`, checked against CPython's `eval` on
# literal test strings written here (not model text).
PY_CASES = [
    "-2**2",
    "2**-1",
    "2**3**2",
    "7//2",
    "-7//2",
    "1.5*2",
    ".5+1",
    "1.+2",
    "00+1",
    "(1+\n2)",
    "2*(3+4)/7",
    "10/4",
]


@pytest.mark.parametrize("text", PY_CASES)
def test_python_ops_match_cpython(text):
    expected = eval(text, {"__builtins__": None}, {})  # noqa: S307 - fixed test literals only
    assert float(evaluate(text, python_ops=True)) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["03+1", "1+\n2", "1+\r2", "1+\v2", "(1)(2)"])
def test_python_ops_syntax_errors_match_cpython(text):
    with pytest.raises(SyntaxError if text != "(1)(2)" else TypeError):
        eval(text, {"__builtins__": None}, {})  # noqa: S307 - fixed test literals only
    with pytest.raises(EvalError):
        evaluate(text, python_ops=True)


HOSTILE = [
    "__import__('os').system('echo pwned')",
    "9**9**9**9",
    "(" * 100_000 + "1" + ")" * 100_000,
    "9" * 100_000,
    "2**64**64",
    "((((((((((((((((((((((((((((((((((1))))))))))))))))))))))))))))))))))",
    "1" + "*99999999" * 50,
    "-" * 400 + "1",
    "٣+٤",
    "",
    "x" * 1_000_000,
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_inputs_fast_and_contained(text):
    for python_ops in (False, True):
        value = None
        with cpu_budget(0.05, python_ops), contextlib.suppress(EvalError):
            value = evaluate(text, python_ops=python_ops)
        if value is not None:
            assert value.numerator.bit_length() <= safe_eval.MAX_VALUE_BITS


def test_garbage_collection_does_not_count_against_the_time_limit():
    """A slow collection (a large training process) must not fail a valid answer: with a collector
    that burns 50 ms of this thread's CPU per run and runs on every allocation, a long valid
    expression still evaluates (the limit is 20 ms)."""
    text = "+".join(["(1+2)*3-4/5"] * 40)
    with slow_collector(0.05):
        value = evaluate(text)
    assert value == 40 * (Fraction(9) - Fraction(4, 5))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789+-*/(). \n", max_size=60))
def test_random_whitelisted_text_matches_cpython_or_errors(text):
    """On the reference whitelist (stripped, as the reference strips), whenever we evaluate,
    CPython's `eval` evaluates too and agrees."""
    text = text.strip()
    try:
        ours = evaluate(text, python_ops=True)
    except EvalError:
        return
    if "**" in text:  # CPython may take unbounded time on powers; compare only the rest
        return
    theirs = eval(text, {"__builtins__": None}, {})  # noqa: S307 - whitelisted characters only
    assert float(ours) == pytest.approx(float(theirs), rel=1e-9, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_unicode_never_crashes(text):
    with cpu_budget(0.05), contextlib.suppress(EvalError):
        evaluate(text, python_ops=True)
