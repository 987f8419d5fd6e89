"""Countdown: combine the given numbers with + − × ÷ (each once) to reach a target.

SPG arXiv:2510.09541 §7 (3 numbers, from TinyZero's Countdown-Tasks-3to4). Reference reward on the
last `<answer>` block: no tag → 0; number multiset ≠ given, bad characters or evaluation error →
0.1; value within 1e-5 of the target → 1.0; else 0.1. Both modes evaluate with `data.safe_eval`
(never `eval`). `compat="d1"` keeps the reference semantics (`\\d+` multiset, Python `eval` grammar
incl. `**`, `//`, decimals, float tolerance). `compat="fixed"` also reads `\\boxed{}`, `\\times`,
`\\cdot`, `\\div` and a trailing `= target` (the paper's eval parser), uses exact rationals and only
+ − × ÷, and, without tags (compact style), reads the last line.
"""

from __future__ import annotations

import itertools
import re
from fractions import Fraction
from typing import Any

from data import answers, safe_eval
from data.tasks.base import SYSTEM_PROMPT, Task, check_style, final_line, rng_for, xml_completion

_D1_CHARS = re.compile(r"^[\d+\-*/().\s]+$")
_OPS = ("+", "-", "*", "/")


def _apply(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b if b != 0 else None


def solve(numbers: list[int], target: int) -> str | None:
    """Exhaustive search for an expression using every number once; None if unreachable."""
    items = [(Fraction(n), str(n)) for n in numbers]

    def search(items):
        if len(items) == 1:
            return items[0][1] if items[0][0] == target else None
        for i, j in itertools.permutations(range(len(items)), 2):
            rest = [items[k] for k in range(len(items)) if k not in (i, j)]
            for op in _OPS:
                value = _apply(items[i][0], op, items[j][0])
                if value is not None:
                    found = search([*rest, (value, f"({items[i][1]}{op}{items[j][1]})")])
                    if found:
                        return found
        return None

    found = search(items)
    return found[1:-1] if found and found.startswith("(") and len(numbers) > 1 else found


class Countdown(Task):
    """Countdown with `num_numbers` operands in [1, max_number] and targets in [1, max_target]."""

    features = {"numbers": "int_list", "target": "int", "solution": "text", "steps": "text"}

    def __init__(self, num_numbers: int = 3, max_number: int = 99, max_target: int = 100):
        if num_numbers not in (2, 3, 4, 5):
            raise ValueError(f"num_numbers must be in 2..5, got {num_numbers}")
        self.num_numbers, self.max_number, self.max_target = num_numbers, max_number, max_target
        self.name = "countdown" if num_numbers == 3 else f"countdown{num_numbers}"

    def generate(self, split: str, num: int, seed: int) -> list[dict[str, Any]]:
        """Random numbers, then a random combination tree whose value (integral at every step,
        in [1, max_target]) becomes the target, so every example is solvable by construction."""
        rng = rng_for(self.name, split, seed)
        out = []
        while len(out) < num:
            numbers = [rng.randint(1, self.max_number) for _ in range(self.num_numbers)]
            items = [(Fraction(n), str(n)) for n in numbers]
            steps = []
            while len(items) > 1:
                a, sa = items.pop(rng.randrange(len(items)))
                b, sb = items.pop(rng.randrange(len(items)))
                op = rng.choice(_OPS)
                value = _apply(a, op, b)
                if value is None or value.denominator != 1 or value < 0:
                    break  # keep intermediates non-negative integers (a readable derivation)
                steps.append(f"{a}{op}{b}={value}")
                items.append((value, f"({sa}{op}{sb})"))
            if len(steps) != self.num_numbers - 1 or not 1 <= items[0][0] <= self.max_target:
                continue
            expr = items[0][1][1:-1]
            out.append(
                {
                    "numbers": numbers,
                    "target": int(items[0][0]),
                    "solution": expr,
                    "steps": ", ".join(steps),
                }
            )
        return out

    def prompt(self, example: dict[str, Any], style: str = "compact") -> str:
        check_style(style)
        nums, target = [int(n) for n in example["numbers"]], int(example["target"])
        if style == "compact":
            return f"numbers {' '.join(map(str, nums))} target {target}\n"
        return (
            f"{SYSTEM_PROMPT}\nUsing only the numbers {nums}, create an arithmetic expression that "
            f"evaluates to exactly {target}. You must use all numbers from the list, and each "
            "number must be used exactly once. You may use the operations +, -, *, and / as "
            "needed. After reasoning, provide only your final expression inside <answer></answer> "
            "tags without including an equals sign or the target number. For example, if the "
            "numbers are [2, 3, 4] and the target is 5, a valid answer is: "
            "<answer>\n2*4-3\n</answer>"
        )

    def target(self, example: dict[str, Any], style: str = "compact") -> str:
        check_style(style)
        if style == "compact":
            return example["solution"]
        return xml_completion(example["steps"], example["solution"])

    def _extract_fixed(self, completion: str) -> str | None:
        answer = answers.last_answer(completion)
        if answer is None:
            answer = final_line(completion)
        if answer is None:
            return None
        boxed = answers.last_boxed(answer)
        answer = boxed if boxed is not None else answer
        for latex, op in (
            ("\\times", "*"),
            ("\\cdot", "*"),
            ("\\div", "/"),
            ("×", "*"),
            ("÷", "/"),
        ):
            answer = answer.replace(latex, op)
        return re.sub(r"=\s*-?\d+(?:\.\d+)?\s*$", "", answer).strip()

    def _score(self, completion: str, example: dict[str, Any], compat: str) -> tuple[float, dict]:
        numbers = sorted(int(n) for n in example["numbers"])
        target = int(example["target"])
        info = {"has_answer": 0.0, "valid_numbers": 0.0, "correct": 0.0}
        if compat == "d1":
            blocks = answers.answer_blocks(completion)
            if not blocks:
                return 0.0, info
            equation = blocks[-1].strip()
            info["has_answer"] = 1.0
            runs = re.findall(r"\d+", equation)
            if any(len(r) > 4300 for r in runs) or sorted(int(r) for r in runs) != numbers:
                return 0.1, info
            info["valid_numbers"] = 1.0
            if not _D1_CHARS.match(equation):
                return 0.1, info
            value = safe_eval.evaluate(equation, python_ops=True)
            ok = abs(float(value) - target) < 1e-5
        else:
            equation = self._extract_fixed(completion)
            if not equation:
                return 0.0, info
            info["has_answer"] = 1.0
            used = safe_eval.literals(equation)
            if sorted(used) != numbers:
                return 0.1, info
            info["valid_numbers"] = 1.0
            ok = safe_eval.evaluate(equation) == target
        info["correct"] = float(ok)
        return (1.0 if ok else 0.1), info

    def _reward(self, completion: str, example: dict[str, Any], compat: str) -> float:
        try:
            return self._score(completion, example, compat)[0]
        except (safe_eval.EvalError, OverflowError, ValueError):
            return 0.1  # the reference gives the format score when evaluation fails

    def _metrics(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        try:
            return self._score(completion, example, "fixed")[1]
        except (safe_eval.EvalError, OverflowError, ValueError):
            return {"has_answer": 1.0, "valid_numbers": 0.0, "correct": 0.0}

    def metric_names(self) -> tuple[str, ...]:
        return ("has_answer", "valid_numbers", "correct")
