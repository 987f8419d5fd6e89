"""Arithmetic with a per-prompt difficulty knob, for prompt curricula (PCL, arXiv:2510.01135).

Each example draws its own number of operations (`ops`, default 1-3) and operand length (`digits`,
1 or 2: operands in [1, 9] or [1, 99]), so one pool spans pass rates from ~1 (one 1-digit
operation) to ~0 (three 2-digit operations) for a small warm-started model: the setting where the
choice of prompts matters. Prompts, reference derivations and the exact-match reward are those of
`data.tasks.arithmetic` (compact style: `"12+3*4=\n"` → `"3*4=12; 12+12=24; the final answer is
24"`). Every example carries its difficulty metadata: `num_ops`, `digits` and
`difficulty = num_ops + digits − 1` (1 = easiest).
"""

from __future__ import annotations

from typing import Any

from data.tasks.arithmetic import Arithmetic
from data.tasks.base import rng_for


class ArithMix(Arithmetic):
    """Arithmetic whose operation count and operand length vary per example."""

    features = {
        "question": "text",
        "answer": "int",
        "steps": "text",
        "num_ops": "int",
        "digits": "int",
        "difficulty": "int",
    }

    def __init__(self, ops=(1, 2, 3), digits=(1, 2), max_value: int = 999):
        ops, digits = tuple(int(o) for o in ops), tuple(int(d) for d in digits)
        if not ops or min(ops) < 1:
            raise ValueError(f"ops must be positive operation counts, got {ops}")
        if not digits or min(digits) < 1 or max(digits) > 3:
            raise ValueError(f"digits must lie in 1..3, got {digits}")
        super().__init__(num_ops=max(ops), max_operand=10 ** max(digits) - 1, max_value=max_value)
        self.ops, self.digits = ops, digits
        # One expression generator per operand length (the parent's tree builder).
        self._by_digits = {d: Arithmetic(1, 10**d - 1, max_value) for d in digits}
        self.name = "arith_mix"

    def generate(self, split: str, num: int, seed: int) -> list[dict[str, Any]]:
        key = f"{self.name}{self.ops}{self.digits}{self.max_value}"
        rng = rng_for(key, split, seed)
        out = []
        while len(out) < num:
            k, d = rng.choice(self.ops), rng.choice(self.digits)
            tree = self._by_digits[d]._tree(rng, k)
            if tree is None:
                continue
            text, value, steps = tree
            out.append(
                {
                    "question": text,
                    "answer": value,
                    "steps": "; ".join(steps),
                    "num_ops": k,
                    "digits": d,
                    "difficulty": k + d - 1,
                }
            )
        return out
