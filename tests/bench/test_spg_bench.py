"""The SPG table's summary (paired change per seed) and the estimator bench's shuffle control."""

import numpy as np

from bench.spg_estimators import _shuffle_within_groups
from bench.spg_table import summarise


def _cell(before, after):
    return {"before/eval/accuracy@24": before, "after/eval/accuracy@24": after}


def test_summary_reports_paired_change_per_seed():
    # Seed warm starts differ a lot; the method gains exactly 1 point on each seed.
    res = {("sudoku4", "SPG-Mix"): [_cell(0.70, 0.71), _cell(0.80, 0.81), _cell(0.75, 0.76)]}
    rows, table = summarise(res, ["sudoku4"], {"sudoku4": 24}, ["SPG-Mix", "D1"])
    mix, d1 = rows
    assert mix["sudoku4 change"] == "+1.00 ± 0.00"
    assert mix["sudoku4"].startswith("76.0 ± 4.1") and mix["sudoku4 warm start"] == "75.0"
    assert d1["sudoku4"] == "not run"
    assert "| SPG-Mix |" in table and "| D1 | not run |" in table


def test_shuffle_keeps_each_groups_advantages():
    adv = np.arange(12.0)
    out = _shuffle_within_groups(adv, 6, 0)
    assert not np.array_equal(out, adv)
    for g in range(2):
        assert sorted(out[6 * g : 6 * g + 6]) == sorted(adv[6 * g : 6 * g + 6])


def _powered(change, lo, hi):
    k = "change/test/accuracy@24"
    return {**_cell(0.5, 0.5 + change), f"{k}/mean": change, f"{k}/lo": lo, f"{k}/hi": hi}


def test_summary_reports_intervals_and_gain_over_shuffle_control():
    from bench.spg_table import CONTROL

    res = {
        ("sudoku4", "SPG-ELBO"): [_powered(0.06, 0.03, 0.09), _powered(0.08, 0.05, 0.11)],
        ("sudoku4", CONTROL): [_powered(0.01, -0.02, 0.04), _powered(0.01, -0.02, 0.04)],
    }
    rows, table = summarise(res, ["sudoku4"], {"sudoku4": 24}, ["SPG-ELBO", CONTROL])
    elbo, ctrl = rows
    assert (
        elbo["sudoku4 change per seed (95% CI over prompts)"]
        == "+6.0 [+3.0, +9.0]; +8.0 [+5.0, +11.0]"
    )
    # Gains over the control on the two seeds: 5 and 7 points -> mean 6.
    assert elbo["sudoku4 gain over control (95% t)"].startswith("+6.00 [")
    assert "sudoku4 gain over control (95% t)" not in ctrl
    assert "gain over control" in table


def test_gain_over_control_pairs_by_seed():
    from bench.spg_table import CONTROL

    ctrl = [{**_powered(c, c - 0.03, c + 0.03), "seed": i} for i, c in enumerate((0.0, 0.02, 0.04))]
    res = {
        ("sudoku4", "SPG-Mix"): [{**_powered(0.05, 0.02, 0.08), "seed": 1}],
        ("sudoku4", CONTROL): ctrl,
    }
    rows, _ = summarise(res, ["sudoku4"], {"sudoku4": 24}, ["SPG-Mix", CONTROL])
    # One seed (1): compared with the control of seed 1 only, no interval.
    assert rows[0]["sudoku4 gain over control (95% t)"] == "+3.00 (1 seed, no interval)"
