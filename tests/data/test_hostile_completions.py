"""Hostile model text: rewards never raise, never run code, stay in range, and take < 50 ms.

Times are CPU time of the calling thread, garbage collection excluded (tests/support/cpu_budget.py):
the test machine is shared, and wall-clock time would measure other people's load. The limits
inside the parsers use CPU time too.
"""

import os

import pytest
from cpu_budget import cpu_budget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data import latex, tasks

EXAMPLES = {
    "countdown": {"numbers": [9, 9, 9], "target": 9, "solution": "9*9/9", "steps": ""},
    "countdown4": {"numbers": [9, 9, 9, 9], "target": 9, "solution": "9*9/9/9*9", "steps": ""},
    "sudoku4": {"puzzle": "3014002020004130", "solution": "3214142323414132"},
    "sudoku9": {"puzzle": "0" * 81, "solution": "123456789" * 9},
    "arithmetic": {"question": "1+2", "answer": 3, "steps": "1+2=3", "num_ops": 1},
    "gsm8k": {"question": "q", "solution": "#### 7", "answer": "7"},
    "math500": {"problem": "p", "solution": "\\boxed{\\frac{1}{2}}", "answer": "\\frac{1}{2}"},
}
_SENTINEL = "/tmp/lmrl_hostile_sentinel"


def _wrap(s):
    return [
        s,
        f"<answer>{s}</answer>",
        f"<answer>\\boxed{{{s}}}</answer>",
        f"<reasoning>\n{s}\n</reasoning>\n<answer>\n{s}\n</answer>\n",
        f"the final answer is {s}",
    ]


HOSTILE = [
    *_wrap(f"__import__('os').system('touch {_SENTINEL}')"),
    *_wrap("9**9**9**9"),
    *_wrap("(" * 100_000 + "9" + ")" * 100_000),
    *_wrap("{" * 50_000 + "}" * 50_000),
    *_wrap("\\frac{" * 3000),
    *_wrap("9" * 100_000),
    *_wrap("(" * 3000 + "9" + ")" * 3000),  # under the length cap: the parsers' own limits act
    *_wrap("9" * 3000),
    *_wrap("-" * 3000 + "9"),
    *_wrap("9*" * 1500 + "9"),
    *_wrap("2^{2^{2^{2^{2^{2^{2}}}}}}"),
    *_wrap("١٢٣ + ٤٥٦ = ٩"),
    *_wrap("x" * 1_000_000),
    *_wrap("<answer>" * 2000),
    *_wrap("</reasoning>\n<answer>\n" * 700),
    *_wrap(""),
    "",
    "\x00\x08oxed\ud7ff\ufffd",
    "<reasoning>" + "</reasoning> <answer>" * 700,  # quadratic for the lazy regexes
    "<reasoning>\n" + "\n</reasoning>\n<answer>\n" * 600,
    "<answer>" + "9" * 4000 + "</answer>",
    "<answer>\\boxed{" + "x^{" * 100 + "}" * 100 + "}</answer>",
    "<answer>\\boxed{\\sqrt[99999]{2}^{999}}</answer>",
]


@pytest.fixture(scope="module", autouse=True)
def _warm():
    latex.warm_up()  # one-time sympy import and cache fill (~1 s) happens outside the timings
    if os.path.exists(_SENTINEL):
        os.remove(_SENTINEL)
    yield
    assert not os.path.exists(_SENTINEL), "a completion executed code"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_hostile_completions(name):
    task = tasks.get(name)
    example = EXAMPLES[name]
    for compat in ("fixed", "d1"):
        low, high = task.reward_range(compat)
        for text in HOSTILE:
            with cpu_budget(0.05, name, compat, text[:40]):
                r = task.reward(text, example, compat=compat)
                m = task.metrics(text, example)
            assert isinstance(r, float) and low <= r <= high, (name, compat, text[:40], r)
            assert all(isinstance(v, float) for v in m.values())


def test_non_string_completion_scores_zero():
    assert tasks.get("countdown").reward(None, EXAMPLES["countdown"]) == 0.0  # type: ignore


_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="<>/answerboxd{}\\0123456789+-*()^. \n", max_size=300),
    st.lists(
        st.sampled_from(
            [
                "<answer>",
                "</answer>",
                "<reasoning>\n",
                "\n</reasoning>\n",
                "\\boxed{",
                "}",
                "9",
                "**",
                "(",
                ")",
                "the final answer is ",
                "-",
                "\n",
                "\\frac",
            ]
        ),
        max_size=60,
    ).map("".join),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXT, name=st.sampled_from(sorted(EXAMPLES)), compat=st.sampled_from(["fixed", "d1"]))
def test_random_strings(text, name, compat):
    task = tasks.get(name)
    with cpu_budget(0.05):
        r = task.reward(text, EXAMPLES[name], compat=compat)
    low, high = task.reward_range(compat)
    assert low <= r <= high


def test_length_cap_is_what_stops_megabyte_text():
    """Text over MAX_COMPLETION_CHARS scores 0 even if it would otherwise be correct."""
    from data.answers import MAX_COMPLETION_CHARS

    task = tasks.get("arithmetic")
    ok = "the final answer is 3"
    assert task.reward(ok, EXAMPLES["arithmetic"]) == 1.0
    padded = " " * MAX_COMPLETION_CHARS + ok
    assert task.reward(padded, EXAMPLES["arithmetic"]) == 0.0


# Values a float cannot hold and powers whose exact value is huge: never correct, always cheap.
NONFINITE_OR_HUGE = [
    "\\infty",
    "-\\infty",
    "\\frac{1}{0}",
    "0^{-1}",
    "\\frac{0}{0}",
    "10^{400}",
    "-10^{400}",
    "10^{308}\\cdot10",
    "\\frac{1}{10^{400}}",
    "2^{1000}\\cdot2^{1000}",
    "{9^{999}}^{999}",
    "{{9^{999}}^{999}}^{999}",
    "(10^{30}x)^{999}",
    "{10^{999}}^{-999}",
    "2^{2^{2^{2^{2}}}}",
    "\\sqrt{10^{999}}^{999}",
    "\\infty-\\infty",
    "\\pi^{\\infty}",
]
REFERENCES = ["\\frac{1}{2}", "5", "0", "-5", "1", "10^{400}"]


@pytest.mark.parametrize("pred", NONFINITE_OR_HUGE)
def test_nonfinite_and_huge_answers_are_never_equivalent(pred):
    from data.answers import is_equivalent

    for ref in REFERENCES:
        if pred == ref:
            continue  # identical text is equal as a string, before any value is computed
        with cpu_budget(0.05, pred, ref):
            ok = is_equivalent(pred, ref)
        assert ok is False, (pred, ref)


@pytest.mark.parametrize("pred", NONFINITE_OR_HUGE)
def test_nonfinite_and_huge_completions_score_no_correctness(pred):
    task = tasks.get("math500")
    for ref in REFERENCES:
        example = {**EXAMPLES["math500"], "answer": ref}
        if pred == ref:
            continue
        text = f"<reasoning>r</reasoning><answer>\\boxed{{{pred}}}</answer>"
        with cpu_budget(0.05, pred, ref):
            correct = task.metrics(text, example)["correct"]
            reward = task.reward(text, example, compat="fixed")
        assert correct == 0.0 and reward < 2.0, (pred, ref, correct, reward)
