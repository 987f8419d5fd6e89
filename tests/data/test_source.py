"""The data path (issue 20 item 3): generated splits as array_record, read through tfds + grain."""

from __future__ import annotations

import os

import numpy as np
import pytest

from data import pipeline, source, tasks
from models.errors import UserError


@pytest.fixture()
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("LMRL_TFDS_DIR", str(tmp_path))
    return str(tmp_path)


def test_examples_are_the_generated_ones_in_order_and_built_once(root, capsys):
    want = tasks.get("countdown", max_number=9, max_target=50).generate("train", 40, 3)
    ds = source.examples("countdown", "train", 40, 3, {"max_number": 9, "max_target": 50})
    assert len(ds) == 40 and [ds[i] for i in range(40)] == want
    assert "data: built countdown_train_n40_s3" in capsys.readouterr().out
    again = source.examples("countdown", "train", 40, 3, {"max_target": 50, "max_number": 9})
    assert [again[i] for i in range(40)] == want
    assert "built" not in capsys.readouterr().out  # the same build, found on disk
    files = [f for _, _, fs in os.walk(root) for f in fs if "array_record" in f]
    assert files


def test_sourced_task_reads_from_disk_and_keeps_the_task_api(root):
    base = tasks.get("sudoku4")
    t = source.SourcedTask(base, "sudoku4")
    ex = t.generate("test", 12, 0)
    assert ex == base.generate("test", 12, 0)
    assert t.prompt(ex[0]) == base.prompt(ex[0]) and t.name == base.name
    assert t.reward(base.target(ex[0]), ex[0]) == base.reward_range()[1]


def test_batches_from_disk_equal_in_memory_and_resume_loses_nothing(root):
    from data.tokenizer import CharTokenizer

    task, tok = tasks.get("arithmetic", num_ops=2), CharTokenizer()

    def enc(ex):
        return pipeline.encode_sft_example(ex, task, tok, 64, "compact")

    mem = pipeline.make_batches([enc(e) for e in task.generate("train", 30, 1)], 4, seed=5)
    lazy_ds = source.SourcedTask(task, "arithmetic", {"num_ops": 2}).source("train", 30, 1)
    lazy = pipeline.make_batches(lazy_ds.map(enc), 4, seed=5)
    for i in range(12):
        for k in mem[i]:
            np.testing.assert_array_equal(mem[i][k], lazy[i][k])
    # A restart rebuilds the pipeline from disk and continues at batch 3: across the first epoch
    # (30 examples -> batches 0..6 hold 28 of them, no repeats) nothing is lost or repeated.
    restarted = pipeline.make_batches(
        source.SourcedTask(task, "arithmetic", {"num_ops": 2}).source("train", 30, 1).map(enc),
        4,
        seed=5,
    )
    seen = [r.tobytes() for i in range(3) for r in lazy[i]["tokens"]]
    seen += [r.tobytes() for i in range(3, 7) for r in restarted[i]["tokens"]]
    all_rows = {enc(e)["tokens"].tobytes() for e in task.generate("train", 30, 1)}
    assert len(seen) == len(set(seen)) == 28 and set(seen) <= all_rows


def test_unknown_data_source_is_a_user_error():
    from configs import sft
    from train.sft import make_task_and_tokenizer

    c = sft.get_config("tiny")
    c.data_source = "parquet"
    with pytest.raises(UserError, match="data_source"):
        make_task_and_tokenizer(c)


@pytest.mark.parametrize("name", ["gsm8k", "math500"])
def test_file_backed_tasks_convert_once_into_the_same_format(root, name, tmp_path, capsys):
    fixture = os.path.join(os.path.dirname(__file__), "fixtures", f"{name}_tiny.jsonl")
    base = tasks.get(name)
    t = source.SourcedTask(base, name)
    want = base.load(fixture, "test")
    assert t.load(fixture, "test") == want and want
    assert "data: built" in capsys.readouterr().out
    assert t.load(fixture, "test") == want
    assert "data: built" not in capsys.readouterr().out
    edited = tmp_path / "edited.jsonl"
    edited.write_text(open(fixture).read().splitlines()[0] + "\n")
    assert t.load(str(edited), "test") == want[:1]  # another file content: converted again
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        t.load(str(tmp_path / "missing.jsonl"), "test")


def test_an_edited_task_generator_builds_afresh(root, monkeypatch):
    """The build key includes the task class's source, so editing a registered task's generator
    (as in the bring-your-own-task notebook) never reads the examples its old code wrote."""
    name = source.config_name("sudoku4", {}, "train", 8, 0)
    assert name == source.config_name("sudoku4", {}, "train", 8, 0)
    monkeypatch.setattr(source, "_task_code", lambda task, kw: "edited generator")
    assert source.config_name("sudoku4", {}, "train", 8, 0) != name
