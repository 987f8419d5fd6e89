"""Arithmetic chains of thought: multi-step integer expressions, answer after `the final answer is`.

The generated task for JEPO (arXiv:2503.19618, App. B.2: generations must contain "the final answer
is", else a format penalty) and PCL (arXiv:2510.01135: binary reward, difficulty knob). Difficulty =
`num_ops` (+, −, ×) in a random expression tree over operands in [1, max_operand]; the reference
derivation evaluates the innermost operations first, one step per operation. Reward: 1.0 if the
first integer after the last "the final answer is" equals the answer, else 0 (`compat` has no
effect: there is no reference code for this task).
"""

from __future__ import annotations

import re
from typing import Any

from data.tasks.base import Task, check_style, rng_for

MARKER = "the final answer is"
_ANSWER_RE = re.compile(r"\s*:?\s*\$?\s*(-?[0-9][0-9,]*)")
_PAPER_INSTRUCTION = (
    "Solve the following problem step by step. End your response with "
    f'"{MARKER} N" where N is the result.\n\n'
)


def final_answer(text: str) -> int | None:
    """The integer after the last occurrence of the marker (case-insensitive), else None."""
    idx = text.lower().rfind(MARKER)
    if idx < 0:
        return None
    m = _ANSWER_RE.match(text, idx + len(MARKER))
    if m is None:
        return None
    digits = m.group(1).replace(",", "")
    return int(digits) if len(digits) <= 40 else None


class Arithmetic(Task):
    """Expressions with `num_ops` operations; intermediate values bounded by `max_value`."""

    features = {"question": "text", "answer": "int", "steps": "text", "num_ops": "int"}
    answer_marker = MARKER

    def __init__(self, num_ops: int = 2, max_operand: int = 9, max_value: int = 999):
        if num_ops < 1:
            raise ValueError(f"num_ops must be >= 1, got {num_ops}")
        self.num_ops, self.max_operand, self.max_value = num_ops, max_operand, max_value
        self.name = "arithmetic"

    def _tree(self, rng, ops_left: int) -> tuple[str, int, list[str]] | None:
        """Random expression with `ops_left` ops: (text, value, derivation steps) or None."""
        if ops_left == 0:
            v = rng.randint(1, self.max_operand)
            return str(v), v, []
        left_ops = rng.randint(0, ops_left - 1)
        left = self._tree(rng, left_ops)
        right = self._tree(rng, ops_left - 1 - left_ops)
        if left is None or right is None:
            return None
        op = rng.choice("+-*")
        (lt, lv, ls), (rt, rv, rs) = left, right
        value = lv + rv if op == "+" else lv - rv if op == "-" else lv * rv
        if abs(value) > self.max_value:
            return None
        # Parenthesise compound operands so the text parses with the intended tree.
        lt = f"({lt})" if left_ops and op == "*" and any(c in lt for c in "+-") else lt
        rt = f"({rt})" if ops_left - 1 - left_ops and (op != "+" or "-" in rt) else rt
        return f"{lt}{op}{rt}", value, [*ls, *rs, f"{lv}{op}{rv}={value}"]

    def generate(self, split: str, num: int, seed: int) -> list[dict[str, Any]]:
        rng = rng_for(f"{self.name}{self.num_ops}", split, seed)
        out = []
        while len(out) < num:
            tree = self._tree(rng, self.num_ops)
            if tree is None:
                continue
            text, value, steps = tree
            out.append(
                {
                    "question": text,
                    "answer": value,
                    "steps": "; ".join(steps),
                    "num_ops": self.num_ops,
                }
            )
        return out

    def prompt(self, example: dict[str, Any], style: str = "compact") -> str:
        check_style(style)
        if style == "compact":
            return f"{example['question']}=\n"
        return f"{_PAPER_INSTRUCTION}Compute {example['question']}."

    def target(self, example: dict[str, Any], style: str = "compact") -> str:
        check_style(style)
        sep = "; " if style == "compact" else "\n"
        steps = example["steps"].replace("; ", sep)
        return f"{steps}{sep}{MARKER} {int(example['answer'])}"

    def _reward(self, completion: str, example: dict[str, Any], compat: str) -> float:
        return float(final_answer(completion) == int(example["answer"]))

    def _metrics(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return {
            "correct": float(final_answer(completion) == int(example["answer"])),
            "has_marker": float(MARKER in completion.lower()),
        }

    def metric_names(self) -> tuple[str, ...]:
        return ("correct", "has_marker")
