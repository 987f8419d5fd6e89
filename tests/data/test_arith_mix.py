"""arith_mix: per-example difficulty metadata matches the expression; targets earn the reward."""

import json
import re

import pytest

from data import tasks
from data.tasks.arith_mix import ArithMix


def test_deterministic_and_metadata_matches_question():
    t = tasks.get("arith_mix")
    a = t.generate("train", 300, seed=3)
    assert json.dumps(a) == json.dumps(t.generate("train", 300, seed=3))
    assert json.dumps(a) != json.dumps(t.generate("test", 300, seed=3))
    seen = set()
    for ex in a:
        q = ex["question"]
        ops = len(re.findall(r"(?<=[0-9)])[-+*]", q))
        width = max(len(x) for x in re.findall(r"[0-9]+", q))
        assert ops == ex["num_ops"] and width <= ex["digits"]
        assert ex["difficulty"] == ex["num_ops"] + ex["digits"] - 1
        assert eval(q) == ex["answer"]  # noqa: S307 - our own generated digits and operators
        assert t.reward(t.target(ex), ex) == 1.0 and t.reward("the final answer is x", ex) == 0
        seen.add((ex["num_ops"], ex["digits"]))
    assert seen == {(k, d) for k in (1, 2, 3) for d in (1, 2)}


def test_knobs_and_prompt_length():
    from data.tokenizer import CharTokenizer

    t = ArithMix(ops=(2,), digits=(1,))
    assert {ex["difficulty"] for ex in t.generate("train", 50, 0)} == {2}
    tok = CharTokenizer()
    longest = max(
        len(tok.encode(t.prompt(e))) for e in tasks.get("arith_mix").generate("test", 500, 0)
    )
    assert longest + 1 <= 20  # configs/pcl.py: max_prompt_len
    with pytest.raises(ValueError):
        ArithMix(digits=(4,))
