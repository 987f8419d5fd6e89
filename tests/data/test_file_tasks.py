"""GSM8K / MATH500 loaders from local JSONL fixtures."""

import os

import pytest

from data import tasks
from models.errors import MissingFileError, UserError

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
    task = tasks.get(name, data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Put the"):
        task.load(str(tmp_path / "absent.jsonl"))
    # generate (what the runners call) reads <data_dir>/<task>/<split>.jsonl: a one-line user
    # error naming that path (still a FileNotFoundError).
    with pytest.raises(MissingFileError) as e:
        task.generate("train", 1, 0)
    assert str(tmp_path / name / "train.jsonl") in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["gsm8k", "math500"])
def test_generate_reads_split_files(name):
    path = os.path.join(FIXTURES, f"{name}_tiny.jsonl")
    task = tasks.get(name, train_path=path, test_path=path)
    rows = task.load(path)
    train = task.generate("train", 7, 0)
    # The train split cycles through reshuffled passes; every row appears in each pass.
    assert len(train) == 7 and all(r in rows for r in train)
    assert sorted(map(str, train[:3])) == sorted(map(str, rows))
    assert task.generate("train", 7, 0) == train and task.generate("train", 7, 1) != train
    # The test split never repeats a row.
    test = task.generate("test", 5, 0)
    assert len(test) == 3 and sorted(map(str, test)) == sorted(map(str, rows))
    # Length limits keep only rows whose rendered prompt and target fit.
    short = tasks.get(name, train_path=path, max_target_chars=70)
    kept = short.generate("train", 4, 0)
    assert kept and all(len(short.target(r)) <= 70 for r in kept)
    with pytest.raises(UserError, match="max_target_chars=5"):
        tasks.get(name, train_path=path, max_target_chars=5).generate("train", 1, 0)
