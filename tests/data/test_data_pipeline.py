"""Pipeline: static shapes, masks, left-padded prompts, resumable batch indexing, length errors."""

import numpy as np
import pytest

from data import pipeline, tasks
from data.tokenizer import CharTokenizer


@pytest.fixture(scope="module")
def setup():
    task = tasks.get("sudoku4")
    return task, CharTokenizer(), task.generate("train", 10, seed=0)


def test_sft_example_masks(setup):
    task, tok, exs = setup
    rec = pipeline.encode_sft_example(exs[0], task, tok, max_len=48)
    p = len(tok.encode(task.prompt(exs[0]), add_bos=True))
    c = len(tok.encode(task.target(exs[0]), add_eos=True))
    assert rec["tokens"].shape == (48,) and rec["tokens"].dtype == np.int32
    assert rec["mask"].sum() == p + c and rec["mask"][: p + c].all()
    assert rec["prompt_mask"].sum() == p and rec["prompt_mask"][:p].all()
    assert rec["loss_mask"].sum() == c and rec["loss_mask"][p : p + c].all()
    assert not (rec["prompt_mask"] & rec["loss_mask"]).any()
    assert rec["tokens"][p + c - 1] == tok.eos_id and (rec["tokens"][p + c :] == tok.pad_id).all()
    assert tok.decode(rec["tokens"][rec["loss_mask"]]) == task.target(exs[0])


def test_too_long_raises_with_index(setup):
    task, tok, exs = setup
    with pytest.raises(ValueError, match=r"example 3 is \d+ tokens"):
        pipeline.encode_sft(exs[:3] + [dict(exs[3], puzzle=exs[3]["puzzle"] * 5)], task, tok, 48)
    with pytest.raises(ValueError, match="prompt of example 0"):
        pipeline.encode_prompts(exs[:2], task, tok, max_prompt_len=10)


def test_prompts_left_padded(setup):
    task, tok, exs = setup
    out = pipeline.encode_prompts([exs[0], dict(exs[1], puzzle="1")], task, tok, 32)
    assert out["tokens"].shape == out["mask"].shape == (2, 32)
    assert out["mask"][:, -1].all()  # every prompt ends at the last position
    n1 = out["mask"][1].sum()
    assert not out["mask"][1, : 32 - n1].any() and out["tokens"][1, 32 - n1] == tok.bos_id
    assert tok.decode(out["tokens"][1]) == task.prompt(dict(exs[1], puzzle="1"))


def test_batches_are_indexable_and_reshuffled(setup):
    task, tok, exs = setup
    recs = pipeline.encode_sft(exs, task, tok, 48)
    ds = pipeline.make_batches(recs, batch_size=4, seed=3)
    b7 = ds[7]
    assert b7["tokens"].shape == (4, 48) and b7["loss_mask"].dtype == bool
    # resumption: a fresh pipeline returns the same batch for the same step
    again = pipeline.make_batches(recs, batch_size=4, seed=3)[7]
    assert all(np.array_equal(b7[k], again[k]) for k in b7)
    # rows 0-9 of the batch stream are epoch 0, rows 10-19 epoch 1: each a permutation
    first_epoch = np.concatenate([ds[i]["tokens"] for i in range(5)])[:10]
    assert sorted(map(bytes, first_epoch)) == sorted(bytes(r["tokens"]) for r in recs)
    second = np.concatenate([ds[i]["tokens"] for i in range(5)])[10:20]
    assert sorted(map(bytes, second)) == sorted(bytes(r["tokens"]) for r in recs)
    assert not np.array_equal(first_epoch, second)  # a new permutation per epoch
    other_seed = pipeline.make_batches(recs, batch_size=4, seed=4)
    assert not np.array_equal(ds[0]["tokens"], other_seed[0]["tokens"])
