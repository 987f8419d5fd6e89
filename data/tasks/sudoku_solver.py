"""Bitmask Sudoku solver, grid enumeration and unique-puzzle generation (for `data.tasks.sudoku`).

Grids are row-major digit strings, `0` = blank. Candidates of a cell are a bitmask (bit d-1 for
digit d) of digits free in its row, column and box; the search fills the most constrained cell
first (MRV), which solves 9×9 puzzles in milliseconds and counts solutions up to a limit.
"""

from __future__ import annotations

import functools
import random


def _box(size: int) -> int:
    return 2 if size == 4 else 3


def _search(cells: list[int], size: int, limit: int, rng: random.Random | None) -> tuple[int, list]:
    """Counts solutions up to `limit`; returns (count, first solution found)."""
    b = _box(size)
    full = (1 << size) - 1
    rows, cols, boxes = [0] * size, [0] * size, [0] * size
    for i, v in enumerate(cells):
        if v:
            r, c = divmod(i, size)
            bit = 1 << (v - 1)
            k = (r // b) * b + c // b
            if rows[r] & bit or cols[c] & bit or boxes[k] & bit:
                return 0, []
            rows[r] |= bit
            cols[c] |= bit
            boxes[k] |= bit
    empties = [i for i, v in enumerate(cells) if not v]
    found: list[list[int]] = []
    count = 0

    def rec() -> bool:
        nonlocal count
        best, best_mask, best_n = -1, 0, size + 1
        for i in empties:
            if cells[i]:
                continue
            r, c = divmod(i, size)
            mask = full & ~(rows[r] | cols[c] | boxes[(r // b) * b + c // b])
            n = mask.bit_count()
            if n < best_n:
                best, best_mask, best_n = i, mask, n
                if n <= 1:
                    break
        if best < 0:
            count += 1
            if not found:
                found.append(list(cells))
            return count >= limit
        if best_n == 0:
            return False
        r, c = divmod(best, size)
        k = (r // b) * b + c // b
        digits = [d for d in range(1, size + 1) if best_mask >> (d - 1) & 1]
        if rng is not None:
            rng.shuffle(digits)
        for d in digits:
            bit = 1 << (d - 1)
            cells[best] = d
            rows[r] |= bit
            cols[c] |= bit
            boxes[k] |= bit
            stop = rec()
            cells[best] = 0
            rows[r] &= ~bit
            cols[c] &= ~bit
            boxes[k] &= ~bit
            if stop:
                return True
        return False

    rec()
    return count, found[0] if found else []


def count_solutions(puzzle: str, size: int, limit: int = 2) -> int:
    """Number of solutions of `puzzle`, counted up to `limit`."""
    return _search([int(c) for c in puzzle], size, limit, None)[0]


def solve(puzzle: str, size: int) -> str | None:
    """One solution of `puzzle`, or None."""
    count, sol = _search([int(c) for c in puzzle], size, 1, None)
    return "".join(map(str, sol)) if count else None


@functools.cache
def all_grids_4x4() -> tuple[str, ...]:
    """All 288 valid 4×4 Sudoku grids, sorted."""
    out: list[str] = []

    def rec(cells: list[int], i: int) -> None:
        if i == 16:
            out.append("".join(map(str, cells)))
            return
        r, c = divmod(i, 4)
        for d in range(1, 5):
            clash = any(
                cells[j] == d
                for j in range(i)
                if j // 4 == r or j % 4 == c or (j // 8 == r // 2 and (j % 4) // 2 == c // 2)
            )
            if not clash:
                cells[i] = d
                rec(cells, i + 1)
        cells[i] = 0

    rec([0] * 16, 0)
    return tuple(sorted(out))


def random_grid(size: int, rng: random.Random) -> str:
    """A uniformly-seeded random full grid (randomised digit order in the search)."""
    _, sol = _search([0] * (size * size), size, 1, rng)
    return "".join(map(str, sol))


def dig_holes(grid: str, size: int, blanks: int, rng: random.Random) -> str | None:
    """Blanks cells of `grid` in random order while the solution stays unique.

    Returns a puzzle with exactly `blanks` blanks, or None if uniqueness stopped the digging first.
    """
    cells = list(grid)
    order = list(range(size * size))
    rng.shuffle(order)
    removed = 0
    for i in order:
        if removed == blanks:
            break
        keep, cells[i] = cells[i], "0"
        if count_solutions("".join(cells), size, limit=2) == 1:
            removed += 1
        else:
            cells[i] = keep
    return "".join(cells) if removed == blanks else None
