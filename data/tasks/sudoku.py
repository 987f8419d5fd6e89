"""Sudoku 4×4 (all 288 grids, split by solution grid) and 9×9 (generated), cell-accuracy reward.

SPG arXiv:2510.09541 §7: puzzles are row-major digit strings with `0` for blanks; the reward takes
the digits of the last `<answer>` block (none → 0), pads with `0`/truncates to n², and returns the
fraction of originally blank cells filled correctly. The SPG re-split puts all puzzles of a solution
grid on one side, so no test grid is seen in training (200 train / 88 test grids). The reference
reward has no known bug, so `compat` only changes the compact-style fallback: `"fixed"` reads the
last line when there is no `<answer>` tag, `"d1"` scores it 0. Metrics: `cell_accuracy`, `solved`.
"""

from __future__ import annotations

import functools
from typing import Any

from data import answers
from data.tasks import sudoku_solver as solver
from data.tasks.base import Task, check_style, final_line, rng_for, xml_completion

SUDOKU_SYSTEM_PROMPT = """
Please solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading left-to-right, top-to-bottom, where '0' represents empty cells.

Rules:
- Fill empty cells with digits 1-4
- Each row must contain digits 1-4 exactly once
- Each column must contain digits 1-4 exactly once
- Each 2x2 box must contain digits 1-4 exactly once

Important: Your solution must be a COMPLETE 16-character string with only the digits 1-4, representing your final solved grid.

Respond in this exact format:
<reasoning>
Your step-by-step solving process
</reasoning>
<answer>
[16-character solution string with no spaces or separators]
</answer>
"""  # noqa: E501 - verbatim reference prompt

# The reference 3-shot pairs (puzzle, solution); their grids are forced into the train split.
FEW_SHOT = (
    ("3014002020004130", "3214142323414132"),
    ("0000100420013142", "4213132424313142"),
    ("2001403002001420", "2341413232141423"),
)


def _rows(grid: str, size: int) -> str:
    return "\n".join(f"R{r + 1}: " + " ".join(grid[r * size : (r + 1) * size]) for r in range(size))


class Sudoku(Task):
    """Sudoku of side `size` (4 or 9). 4×4 draws from the 288 grids of its split; 9×9 generates."""

    features = {"puzzle": "text", "solution": "text"}

    def __init__(
        self,
        size: int = 4,
        min_blanks: int | None = None,
        max_blanks: int | None = None,
        num_test_grids: int = 88,
        split_seed: int = 42,
    ):
        if size not in (4, 9):
            raise ValueError(f"size must be 4 or 9, got {size}")
        self.size, self.name = size, f"sudoku{size}"
        self.min_blanks = min_blanks if min_blanks is not None else (7 if size == 4 else 40)
        self.max_blanks = max_blanks if max_blanks is not None else (12 if size == 4 else 50)
        self.num_test_grids, self.split_seed = num_test_grids, split_seed

    @functools.cached_property
    def grid_split(self) -> dict[str, list[str]]:
        """4×4 only: solution grids per split, disjoint; few-shot grids are always in train."""
        grids = solver.all_grids_4x4()
        rng = rng_for("sudoku4-grids", "split", self.split_seed)
        shot = {s for _, s in FEW_SHOT}
        rest = [g for g in grids if g not in shot]
        rng.shuffle(rest)
        test = sorted(rest[: self.num_test_grids])
        return {"train": sorted(set(grids) - set(test)), "test": test}

    def generate(self, split: str, num: int, seed: int) -> list[dict[str, Any]]:
        """Puzzles with a unique solution and `min_blanks..max_blanks` blanks (4×4: from `split`'s
        grids; 9×9: fresh grids, splits differ by seed stream)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        rng = rng_for(self.name, split, seed)
        n2 = self.size * self.size
        out = []
        while len(out) < num:
            if self.size == 4:
                grid = rng.choice(self.grid_split[split])
                blanks = rng.randint(self.min_blanks, self.max_blanks)
                cells = rng.sample(range(n2), blanks)
                puzzle = "".join("0" if i in cells else c for i, c in enumerate(grid))
                if solver.count_solutions(puzzle, 4, limit=2) != 1:
                    continue
            else:
                grid = solver.random_grid(9, rng)
                puzzle = solver.dig_holes(
                    grid, 9, rng.randint(self.min_blanks, self.max_blanks), rng
                )
                if puzzle is None:
                    continue
            out.append({"puzzle": puzzle, "solution": grid})
        return out

    def prompt(self, example: dict[str, Any], style: str = "compact") -> str:
        check_style(style)
        puzzle = example["puzzle"]
        if style == "compact":
            return f"sudoku {puzzle}\n"
        system = SUDOKU_SYSTEM_PROMPT
        if self.size == 9:
            system = (
                system.replace("4x4", "9x9")
                .replace("16-character", "81-character")
                .replace("1-4", "1-9")
                .replace("2x2", "3x3")
            )
        shots = "\n\n".join(
            f"Question:\nSolve the following Sudoku puzzle: {p}\nAnswer:\n"
            + self.target({"puzzle": p, "solution": s}, "paper")
            for p, s in (FEW_SHOT if self.size == 4 else ())
        )
        head = f"{system}\n\n{shots}" if shots else system
        return f"{head}\n\nQuestion: Solve the following Sudoku puzzle: {puzzle}\nAnswer:\n"

    def target(self, example: dict[str, Any], style: str = "compact") -> str:
        check_style(style)
        if style == "compact":
            return example["solution"]
        reasoning = (
            f"Interpret puzzle as {self.size} rows of {self.size}:\n"
            f"{_rows(example['puzzle'], self.size)}\n\nFinal grid:\n"
            f"{_rows(example['solution'], self.size)}"
        )
        return xml_completion(reasoning, example["solution"])

    def _cells(self, completion: str, example: dict[str, Any], compat: str) -> tuple[int, int]:
        """(correct blank cells, blank cells) of the extracted answer."""
        n2 = self.size * self.size
        puzzle, solution = example["puzzle"], example["solution"]
        blanks = [i for i in range(n2) if puzzle[i] == "0"]
        blocks = answers.answer_blocks(completion)
        if blocks:
            text = blocks[-1].strip()
        elif compat == "fixed":
            text = final_line(completion) or ""
        else:
            return 0, len(blanks)
        if compat == "d1":
            digits = "".join(c for c in text if c.isdigit())  # Unicode digits count too
        else:
            digits = "".join(c for c in text if "0" <= c <= "9")
        if not digits or not blanks:
            return 0, len(blanks)
        digits = (digits + "0" * n2)[:n2]
        return sum(digits[i] == solution[i] for i in blanks), len(blanks)

    def _reward(self, completion: str, example: dict[str, Any], compat: str) -> float:
        correct, blanks = self._cells(completion, example, compat)
        return correct / blanks if blanks else 0.0

    def _metrics(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        correct, blanks = self._cells(completion, example, "fixed")
        return {
            "cell_accuracy": correct / blanks if blanks else 0.0,
            "correct_cells": float(correct),
            "blank_cells": float(blanks),
            "solved": float(blanks > 0 and correct == blanks),
        }

    def metric_names(self) -> tuple[str, ...]:
        return ("cell_accuracy", "correct_cells", "blank_cells", "solved")
