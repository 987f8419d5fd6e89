"""Golden rewards for every task in both compat modes, incl. the reference code's known bugs."""

import pytest

from data import tasks

CD = {"numbers": [2, 46, 88], "target": 2, "solution": "88/(46-2)", "steps": "46-2=44, 88/44=2"}


@pytest.mark.parametrize(
    "completion, fixed, d1",
    [
        ("<reasoning>\nx\n</reasoning>\n<answer>\n88/(46-2)\n</answer>", 1.0, 1.0),
        ("<answer>88/(46-2)</answer> then <answer>46+88/2</answer>", 0.1, 0.1),  # last block
        ("<answer>46-2</answer>", 0.1, 0.1),  # wrong multiset
        ("<answer>88/(46+2)</answer>", 0.1, 0.1),  # wrong value
        ("work: 46-2=44\n88/(46-2)", 1.0, 0.0),  # compact style: fixed reads the last line
        ("", 0.0, 0.0),
        ("<answer>\\boxed{88 \\div (46-2)} = 2</answer>", 1.0, 0.1),  # paper eval parser
        ("<answer>88/(46-2)**1</answer>", 0.1, 0.1),  # extra literal 1
        ("<answer>88//(46-2)</answer>", 0.1, 1.0),  # d1 evaluates Python `//`
        ("<answer>88.0/(46-2)</answer>", 0.1, 0.1),  # `\d+` sees 88 and 0
        ("<answer>(88/(46\n-2))</answer>", 1.0, 1.0),  # newline inside brackets is fine
        ("<answer>88/\n(46-2)</answer>", 1.0, 0.1),  # d1: Python eval SyntaxError
        ("<answer>٨٨/(46-2)</answer>", 0.1, 0.1),  # Unicode digits pass `\d` but not eval
    ],
)
def test_countdown_golden(completion, fixed, d1):
    task = tasks.get("countdown")
    assert task.reward(completion, CD) == pytest.approx(fixed)
    assert task.reward(completion, CD, compat="d1") == pytest.approx(d1)


SUDOKU = {"puzzle": "3014002020004130", "solution": "3214142323414132"}  # 8 blanks


@pytest.mark.parametrize(
    "completion, fixed, d1",
    [
        ("<answer>\n3214142323414132\n</answer>", 1.0, 1.0),
        ("<answer>3214 1423 2341 4132</answer>", 1.0, 1.0),  # separators dropped
        ("<answer>3214</answer>", 1 / 8, 1 / 8),  # padded with zeros: only R1C2 right
        ("<answer>1111111111111111</answer>", 2 / 8, 2 / 8),  # R2C1 and R3C4 are 1
        ("<answer>3214142323414132999</answer>", 1.0, 1.0),  # truncated to 16
        ("3214142323414132", 1.0, 0.0),  # compact style
        ("<answer>²214142323414132</answer>", 0.0, 1.0),  # d1 isdigit keeps '²' as a cell
    ],
)
def test_sudoku_golden(completion, fixed, d1):
    task = tasks.get("sudoku4")
    assert task.reward(completion, SUDOKU) == pytest.approx(fixed)
    assert task.reward(completion, SUDOKU, compat="d1") == pytest.approx(d1)


def test_sudoku_metrics_cell_counts():
    m = tasks.get("sudoku4").metrics("<answer>3214</answer>", SUDOKU)
    assert m == {"cell_accuracy": 1 / 8, "correct_cells": 1.0, "blank_cells": 8.0, "solved": 0.0}


GSM = {"question": "q", "solution": "1,000 * 30 = 30,000\n#### 30,000", "answer": "30,000"}


@pytest.mark.parametrize(
    "completion, fixed, d1",
    [
        # xmlcount = 4 * 0.125 - 0.001 * len("30,000\n</answer>\n") = 0.483; formats 0.5 + 0.5;
        # integer 0.5 (fixed drops the comma; d1 `isdigit` fails); correct 2.0 in both. d1's soft
        # regex has no DOTALL, so it never matches the newlines its strict regex demands (bug 1).
        ("<reasoning>\nr\n</reasoning>\n<answer>\n30,000\n</answer>\n", 3.983, 2.983),
        ("<reasoning>r</reasoning> <answer>30,000</answer>", 3.0, 2.5),  # soft only
        # multi-line reasoning: d1's format regexes fail (bug 1)
        ("<reasoning>\na\nb\n</reasoning>\n<answer>\n30,000\n</answer>\n", 3.983, 2.483),
        # d1 correctness is string equality: "30000" != "30,000"
        ("<reasoning>\na\nb\n</reasoning>\n<answer>\n30000\n</answer>\n", 3.984, 0.984),
        ("the final answer is 30000", 2.0, 0.0),
        ("", 0.0, 0.0),
    ],
)
def test_gsm8k_golden(completion, fixed, d1):
    task = tasks.get("gsm8k")
    assert task.reward(completion, GSM) == pytest.approx(fixed, abs=1e-3)
    assert task.reward(completion, GSM, compat="d1") == pytest.approx(d1, abs=1e-3)


MATH = {"problem": "p", "solution": "so $\\boxed{\\frac{3}{4}}$.", "answer": "\\frac{3}{4}"}


@pytest.mark.parametrize(
    "completion, fixed, d1",
    [
        # d1's `"\boxed" in r` tests for a backspace (bug 2): format 0.75 instead of 1.0
        ("<answer>\\boxed{\\frac{3}{4}}</answer>", 3.0, 2.75),
        ("<answer>\\boxed{\\dfrac34}</answer>", 3.0, 2.75),  # Hendrycks normalisation
        ("<answer>\\boxed{0.75}</answer>", 3.0, 0.75),  # numeric equality only in fixed
        ("<answer>\\boxed{6/8}</answer>", 3.0, 0.75),
        ("\\boxed{\\frac{3}{4}}", 2.5, 2.25),  # no tag
        ("<answer>a</answer><answer>\\boxed{1}</answer>", 1.0, 0.75),  # d1 reads the 1st tag
        ("<answer>\\boxed{\\frac{4}{3}}</answer>", 1.0, 0.75),
        ("nothing", 0.25, 0.25),
        ("<answer>\x08oxed</answer>", 0.75, 1.0),  # the d1 check really looks for "\x08oxed"
    ],
)
def test_math500_golden(completion, fixed, d1):
    task = tasks.get("math500")
    assert task.reward(completion, MATH) == pytest.approx(fixed)
    assert task.reward(completion, MATH, compat="d1") == pytest.approx(d1)


def test_math500_symbolic_equivalence():
    task = tasks.get("math500")
    ex = {"problem": "p", "solution": "\\boxed{x^2+2x+1}", "answer": "x^2+2x+1"}
    assert task.metrics("<answer>\\boxed{(x+1)^2}</answer>", ex)["correct"] == 1.0
    assert task.metrics("<answer>\\boxed{(x+1)^3}</answer>", ex)["correct"] == 0.0


ARITH = {"question": "(3+6)*2", "answer": 18, "steps": "3+6=9; 9*2=18", "num_ops": 2}


@pytest.mark.parametrize(
    "completion, reward",
    [
        ("3+6=9; 9*2=18; the final answer is 18", 1.0),
        ("The final answer is: 18.", 1.0),
        ("the final answer is 17; the final answer is 18", 1.0),  # the last marker counts
        ("the final answer is 18 ... the final answer is 17", 0.0),
        ("18", 0.0),  # no marker (JEPO's format rule)
        ("the final answer is 1,8", 1.0),
    ],
)
def test_arithmetic_golden(completion, reward):
    task = tasks.get("arithmetic")
    for compat in ("fixed", "d1"):
        assert task.reward(completion, ARITH, compat=compat) == reward


def test_unknown_compat_raises():
    with pytest.raises(ValueError, match="compat"):
        tasks.get("countdown").reward("", CD, compat="d2")
