"""Generated tasks: determinism, solvability, Sudoku uniqueness and split disjointness, targets."""

import json

import pytest

from data import safe_eval, tasks
from data.tasks import countdown, sudoku_solver
from data.tasks.sudoku import FEW_SHOT

GENERATED = ["countdown", "countdown4", "sudoku4", "sudoku9", "arithmetic", "arith_mix"]


def test_registry():
    assert set(GENERATED) | {"gsm8k", "math500"} == set(tasks.names())
    with pytest.raises(KeyError, match="unknown task"):
        tasks.get("nope")


@pytest.mark.parametrize("name", GENERATED)
def test_same_seed_byte_identical(name):
    n = 5 if name == "sudoku9" else 50
    a = json.dumps(tasks.get(name).generate("train", n, seed=7)).encode()
    b = json.dumps(tasks.get(name).generate("train", n, seed=7)).encode()
    c = json.dumps(tasks.get(name).generate("train", n, seed=8)).encode()
    assert a == b and a != c


@pytest.mark.parametrize("name, k", [("countdown", 3), ("countdown4", 4)])
def test_countdown_solvable(name, k):
    task = tasks.get(name)
    for ex in task.generate("test", 60, seed=0):
        assert len(ex["numbers"]) == k and 1 <= ex["target"] <= 100
        assert safe_eval.evaluate(ex["solution"]) == ex["target"]
        assert sorted(safe_eval.literals(ex["solution"])) == sorted(ex["numbers"])
        found = countdown.solve(ex["numbers"], ex["target"])  # independent exhaustive search
        assert found is not None and safe_eval.evaluate(found) == ex["target"]


def test_countdown_solver_reports_unreachable():
    assert countdown.solve([1, 1, 1], 100) is None
    assert countdown.solve([2, 3, 4], 5) is not None


def test_all_288_grids_valid_and_distinct():
    grids = sudoku_solver.all_grids_4x4()
    assert len(grids) == len(set(grids)) == 288
    for g in grids[::17]:
        assert sudoku_solver.count_solutions(g, 4) == 1  # a full valid grid is its own solution


def test_sudoku4_unique_blanks_and_disjoint_split():
    task = tasks.get("sudoku4")
    split = task.grid_split
    assert len(split["test"]) == 88 and len(split["train"]) == 200
    assert not set(split["train"]) & set(split["test"])
    for s in ("train", "test"):
        for ex in task.generate(s, 150, seed=1):
            blanks = ex["puzzle"].count("0")
            assert 7 <= blanks <= 12
            assert sudoku_solver.count_solutions(ex["puzzle"], 4, limit=3) == 1
            assert sudoku_solver.solve(ex["puzzle"], 4) == ex["solution"]
            assert ex["solution"] in split[s]
            assert all(p in ("0", c) for p, c in zip(ex["puzzle"], ex["solution"], strict=True))
    for _, shot_solution in FEW_SHOT:
        assert shot_solution in split["train"]


def test_sudoku9_unique():
    task = tasks.get("sudoku9", min_blanks=45, max_blanks=50)
    for ex in task.generate("train", 3, seed=0):
        assert 45 <= ex["puzzle"].count("0") <= 50
        assert sudoku_solver.count_solutions(ex["puzzle"], 9, limit=2) == 1
        assert sudoku_solver.solve(ex["puzzle"], 9) == ex["solution"]


@pytest.mark.parametrize("num_ops", [1, 3, 6])
def test_arithmetic_answers_and_steps(num_ops):
    task = tasks.get("arithmetic", num_ops=num_ops)
    for ex in task.generate("train", 40, seed=0):
        assert safe_eval.evaluate(ex["question"]) == ex["answer"]
        steps = ex["steps"].split("; ")
        assert len(steps) == num_ops
        for step in steps:  # every step is a true single-operation equation
            lhs, rhs = step.split("=")
            assert safe_eval.evaluate(lhs) == int(rhs)


@pytest.mark.parametrize("name", GENERATED)
@pytest.mark.parametrize("style", ["compact", "paper"])
def test_targets_get_full_reward(name, style):
    task = tasks.get(name)
    for ex in task.generate("train", 3 if name == "sudoku9" else 10, seed=0):
        assert task.prompt(ex, style)
        completion = task.target(ex, style)
        assert task.reward(completion, ex) == task.reward_range()[1]
        if style == "paper":
            assert task.reward(completion, ex, compat="d1") == task.reward_range("d1")[1]


def test_compact_prompts_are_short():
    task = tasks.get("countdown")
    ex = task.generate("train", 1, seed=0)[0]
    assert len(task.prompt(ex)) < 40 < len(task.prompt(ex, "paper"))
    with pytest.raises(ValueError, match="style"):
        task.prompt(ex, "verbose")
