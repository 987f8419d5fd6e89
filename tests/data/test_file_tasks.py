"""GSM8K / MATH500 loaders from local JSONL fixtures."""

import os

import pytest

from data import tasks

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def test_gsm8k_load_and_targets():
    task = tasks.get("gsm8k")
    rows = task.load(os.path.join(FIXTURES, "gsm8k_tiny.jsonl"))
    assert [r["answer"] for r in rows] == ["7", "30,000", "-2"]
    for r in rows:
        assert task.reward(task.target(r, "paper"), r) == pytest.approx(4.0, abs=0.02)
        assert task.metrics(task.target(r), r)["correct"] == 1.0
    assert task.metrics("the final answer is 30000", rows[1])["correct"] == 1.0


def test_math500_load_and_targets():
    task = tasks.get("math500")
    rows = task.load(os.path.join(FIXTURES, "math500_tiny.jsonl"))
    assert [r["answer"] for r in rows] == ["\\frac{3}{4}", "2\\sqrt{3}", "x^2+2x+1"]
    for r in rows:
        assert task.reward(task.target(r, "paper"), r) == 3.0
        assert task.reward(task.target(r, "paper"), r, compat="d1") == 2.75  # bug 2


@pytest.mark.parametrize("name", ["gsm8k", "math500"])
def test_missing_file_says_where(name, tmp_path):
    task = tasks.get(name)
    with pytest.raises(FileNotFoundError, match="Put the"):
        task.load(str(tmp_path / "absent.jsonl"))
    with pytest.raises(NotImplementedError):
        task.generate("train", 1, 0)
