"""AR RL runner: JEPO row construction (cut at the marker, answer tokenised alone), pulse runs."""

import importlib

import numpy as np
import pytest

from data.tokenizer import CharTokenizer
from rl.run_ar import cut_at_marker, jepo_rows


def test_cut_at_marker():
    assert cut_at_marker("1+2=3; The final answer is 3") == "1+2=3; The final answer is"
    assert cut_at_marker("the final answer is 1; the final answer is 2") == (
        "the final answer is 1; the final answer is"
    )
    assert cut_at_marker("no marker here") is None


class RC:
    max_new_tokens, max_answer_tokens = 12, 4


def test_jepo_rows_layout():
    tok = CharTokenizer()
    pt = np.array([[0, 1] + tok.encode("5=")], np.int32).repeat(2, 0)
    pm = pt != 0
    gens = ["1 the final answer is 7", "junk"]
    gen = np.zeros((2, 30), np.int32)
    gmask = np.zeros((2, 30), bool)
    for i, g in enumerate(gens):
        ids = tok.encode(g, add_eos=True)
        gen[i, : len(ids)], gmask[i, : len(ids)] = ids, True
    rc = RC()
    rows = jepo_rows(pt, pm, gen, gmask, [5, 5], tok, rc)
    p = pt.shape[1]
    assert rows["tokens"].shape == (2, p + 12 + 4)
    assert rows["valid"].tolist() == [True, False]
    # Row 0: c = "1 the final answer is" cut to the 12-token budget, then " 5" + eos.
    c_ids = tok.encode("1 the final answer is")[:12]
    np.testing.assert_array_equal(rows["tokens"][0, p : p + 12], c_ids)
    np.testing.assert_array_equal(rows["tokens"][0, p + 12 : p + 15], tok.encode(" 5") + [2])
    assert rows["cot_mask"][0].sum() == 12 and rows["ans_mask"][0].sum() == 3
    assert not (rows["cot_mask"] & rows["ans_mask"]).any()
    assert (rows["mask"] >= rows["cot_mask"] | rows["ans_mask"]).all()
    # Row 1 (no marker): the whole text is c, answer still appended for scoring.
    np.testing.assert_array_equal(rows["tokens"][1, p : p + 4], tok.encode("junk"))
    assert rows["cot_mask"][1].sum() == 4 and rows["ans_mask"][1].sum() == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,arg",
    [("jepo", "tiny,reward=exact,multi=0,kl=0.001"), ("grpo", "tiny,objective=rloo,kl=0.01")],
)
def test_pulse_variants(name, arg, tmp_path):
    from rl.run_ar import run

    c = importlib.import_module(f"configs.{name}").get_config(arg)
    c.lock()
    out = run(c, str(tmp_path))
    assert 0.0 <= out["after/accuracy"] <= 1.0 and np.isfinite(out["after/answer_ll"])
    assert out["skipped"] == 0
    assert (tmp_path / "plot.png").exists()
