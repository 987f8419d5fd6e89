"""GSM8K and MATH500 from local JSONL files, with the reference rewards (SPG arXiv:2510.09541 §7).

GSM8K (`question`, `answer` ending in `#### N`) reward = xmlcount + soft format 0.5 + strict format
0.5 + integer answer 0.5 + correctness 2.0 (max 4.0). `compat="d1"`: the reference regexes (no
DOTALL, bug 1) and string equality of the text after the last `<answer>`. `compat="fixed"`: DOTALL
formats and numeric equality of the answer (its `\\boxed{}` if any; without tags the number after
"the final answer is", else the last number).

MATH500 (`problem`, `solution`, `answer`) reward = 2.0·[equivalent last `\\boxed{}`s of response and
solution] + 0.5·(1[<answer> tag] + (1.0 if `\\boxed` in the answer else 0.5)). `compat="d1"`: the
first `<answer>` block, the `"\\boxed"` check that tests for a backspace character (bug 2, so format
is 0.75/0.25) and Hendrycks string equality. `compat="fixed"`: the last block, a real `\\boxed`
check, and `data.answers.is_equivalent` (string, numeric, then sympy).

Both read the public JSONL formats from local files; nothing is downloaded. `load(path)` reads one
file; `generate(split, num, seed)` (what the SFT and RL runners call, e.g. `configs/spg.py:
task=gsm8k`) reads `<data_dir>/<task>/<split>.jsonl` (or the `train_path`/`test_path` given to the
constructor), keeps the rows whose rendered prompt and target fit `max_prompt_chars` and
`max_target_chars` (0: no limit; a character-level model has a static length), and returns `num`
of them in a seed-shuffled order. The train split is cycled when `num` exceeds its rows (each pass
reshuffled); the test split never repeats a row, so it returns at most its row count. A missing
file raises `models.errors.MissingFileError` (a one-line user error, still a FileNotFoundError)
naming the expected path.
"""

from __future__ import annotations

import json
import os
from typing import Any

from data import answers
from data.tasks import formats
from data.tasks.arithmetic import MARKER, final_answer
from data.tasks.base import SYSTEM_PROMPT, Task, check_style, rng_for, xml_completion
from models.errors import MissingFileError, UserError

MATH_INSTRUCTION = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}. \n\n"
)
_DEFAULT_DIR = os.environ.get("LMRL_DATA_DIR", os.path.expanduser("~/lmrl_data"))


def read_jsonl(path: str, required: tuple[str, ...], hint: str) -> list[dict[str, Any]]:
    """Reads a JSONL file whose rows must have the `required` keys."""
    if not os.path.exists(path):
        raise MissingFileError(f"{path} not found. {hint}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = [k for k in required if k not in row]
            if missing:
                raise ValueError(f"{path}:{line_no} lacks keys {missing}")
            rows.append(row)
    return rows


class _JsonlTask(Task):
    """A task read from local JSONL split files (see the module docstring)."""

    generated = False  # no generator: the TFDS builders skip it; `generate` reads the files

    def __init__(
        self,
        data_dir: str = "",
        train_path: str = "",
        test_path: str = "",
        max_prompt_chars: int = 0,
        max_target_chars: int = 0,
        style: str = "compact",
    ):
        check_style(style)
        self.data_dir = data_dir or _DEFAULT_DIR
        self.paths = {"train": train_path, "test": test_path}
        self.max_prompt_chars, self.max_target_chars = max_prompt_chars, max_target_chars
        self.style = style
        self._fitting: dict[str, list[dict[str, Any]]] = {}

    def split_path(self, split: str) -> str:
        """The file `generate(split, ...)` reads."""
        if split not in self.paths:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return self.paths[split] or os.path.join(self.data_dir, self.name, f"{split}.jsonl")

    def _fits(self, ex: dict[str, Any]) -> bool:
        p, t = self.max_prompt_chars, self.max_target_chars
        return (not p or len(self.prompt(ex, self.style)) <= p) and (
            not t or len(self.target(ex, self.style)) <= t
        )

    def generate(self, split: str, num: int, seed: int) -> list[dict[str, Any]]:
        """`num` rows of `split`'s file that fit the length limits, shuffled by `seed` (the train
        split cycles through reshuffled passes; the test split returns at most all its rows)."""
        if split not in self._fitting:
            path = self.split_path(split)
            rows = [ex for ex in self.load(path, split) if self._fits(ex)]
            if not rows:
                raise UserError(
                    f"no row of {path} fits max_prompt_chars={self.max_prompt_chars}, "
                    f"max_target_chars={self.max_target_chars}; raise the task's length limits"
                )
            self._fitting[split] = rows
        rows = self._fitting[split]
        rng = rng_for(self.name, split, seed)
        passes = 1 if split == "test" else max(1, -(-num // len(rows)))
        order: list[int] = []
        for _ in range(passes):
            order += rng.sample(range(len(rows)), len(rows))
        return [dict(rows[i]) for i in order[:num]]


class GSM8K(_JsonlTask):
    """Grade-school math word problems (openai/gsm8k `main`, JSONL)."""

    name = "gsm8k"
    answer_marker = MARKER
    features = {"question": "text", "solution": "text", "answer": "text"}

    def default_path(self, split: str = "test") -> str:
        return self.split_path(split)

    def load(self, path: str | None = None, split: str = "test") -> list[dict[str, Any]]:
        """Loads `path` (default `$LMRL_DATA_DIR/gsm8k/{split}.jsonl`)."""
        path = path or self.default_path(split)
        hint = (
            "Put the GSM8K JSONL there (rows {'question': ..., 'answer': '... #### 42'}, as in "
            "openai/grade-school-math `grade_school_math/data/{train,test}.jsonl`), or point "
            "task_kwargs.data_dir / train_path / test_path (or $LMRL_DATA_DIR) at your copy."
        )
        rows = read_jsonl(path, ("question", "answer"), hint)
        return [
            {
                "question": r["question"],
                "solution": r["answer"],
                "answer": r["answer"].split("####")[-1].strip(),  # raw, as the reference
            }
            for r in rows
        ]

    def prompt(self, example: dict[str, Any], style: str = "compact") -> str:
        check_style(style)
        if style == "compact":
            return f"{example['question']}\n"
        return f"{SYSTEM_PROMPT}\n\n{example['question']}"

    def target(self, example: dict[str, Any], style: str = "compact") -> str:
        check_style(style)
        reasoning = example["solution"].split("####")[0].strip()
        if style == "compact":
            return f"{reasoning}\n{MARKER} {example['answer']}"
        return xml_completion(reasoning, example["answer"])

    def _answer_fixed(self, completion: str) -> str | None:
        ans = answers.last_answer(completion)
        if ans is None:
            value = final_answer(completion)
            return str(value) if value is not None else answers.last_number(completion)
        boxed = answers.last_boxed(ans)
        return boxed if boxed is not None else ans

    def reward_range(self, compat: str = "fixed") -> tuple[float, float]:
        low = 0.0 if compat == "fixed" else -0.002 * answers.MAX_COMPLETION_CHARS
        return (low, 4.0)

    def _reward(self, completion: str, example: dict[str, Any], compat: str) -> float:
        if compat == "d1":
            extracted = answers.d1_extract_xml_answer(completion)
            correct = extracted == example["answer"]
        else:
            extracted = answers.last_answer(completion) or ""
            correct = self._correct(completion, example)
        return (
            formats.count_xml(completion, compat)
            + 0.5 * formats.soft_format(completion, compat)
            + 0.5 * formats.strict_format(completion, compat)
            + 0.5 * formats.int_answer(extracted, compat)
            + 2.0 * correct
        )

    def _correct(self, completion: str, example: dict[str, Any]) -> bool:
        pred = answers.parse_number(self._answer_fixed(completion))
        return pred is not None and pred == answers.parse_number(example["answer"])

    def _metrics(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return {
            "correct": float(self._correct(completion, example)),
            "strict_format": float(formats.strict_format(completion)),
        }

    def metric_names(self) -> tuple[str, ...]:
        return ("correct", "strict_format")


class Math500(_JsonlTask):
    """MATH500 (HuggingFaceH4/MATH-500 JSONL: `problem`, `solution`, `answer`; the train split,
    e.g. the MATH train set the paper uses (`ankner/math-500`), in the same format)."""

    name = "math500"
    answer_marker = MARKER
    features = {"problem": "text", "solution": "text", "answer": "text"}

    def default_path(self, split: str = "test") -> str:
        return self.split_path(split)

    def load(self, path: str | None = None, split: str = "test") -> list[dict[str, Any]]:
        """Loads `path` (default `$LMRL_DATA_DIR/math500/{split}.jsonl`)."""
        path = path or self.default_path(split)
        hint = (
            "Put the MATH500 JSONL there (rows {'problem', 'solution', 'answer'}, as in "
            "HuggingFaceH4/MATH-500 `test.jsonl`), or point task_kwargs.data_dir / train_path / "
            "test_path (or $LMRL_DATA_DIR) at your copy."
        )
        rows = read_jsonl(path, ("problem", "solution"), hint)
        return [
            {
                "problem": r["problem"],
                "solution": r["solution"],
                "answer": r.get("answer") or answers.last_boxed(r["solution"]) or "",
            }
            for r in rows
        ]

    def prompt(self, example: dict[str, Any], style: str = "compact") -> str:
        check_style(style)
        if style == "compact":
            return f"{example['problem']}\n"
        return f"{SYSTEM_PROMPT}\n\n{MATH_INSTRUCTION}{example['problem']}"

    def target(self, example: dict[str, Any], style: str = "compact") -> str:
        check_style(style)
        boxed = f"\\boxed{{{example['answer']}}}"
        if style == "compact":
            return f"{example['solution']}\n{MARKER} {boxed}"
        return xml_completion(example["solution"], boxed)

    def reward_range(self, compat: str = "fixed") -> tuple[float, float]:
        return (0.0, 3.0)

    def _format_d1(self, completion: str) -> float:
        parts = completion.split("<answer>")
        has_tag = len(parts) > 1
        text = parts[1].split("</answer>")[0] if has_tag else completion
        return 0.5 * (float(has_tag) + (1.0 if "\boxed" in text else 0.5))  # bug 2: "\b"

    def _correct_d1(self, completion: str, example: dict[str, Any]) -> bool:
        ref = answers.d1_remove_boxed(answers.d1_last_boxed_only_string(example["solution"]))
        try:
            pred = answers.d1_remove_boxed(answers.d1_last_boxed_only_string(completion))
        except (TypeError, AssertionError):
            pred = completion
        return answers.d1_is_equiv(pred, ref)

    def _correct(self, completion: str, example: dict[str, Any]) -> bool:
        pred = answers.last_boxed(completion)
        if pred is None:
            block = answers.last_answer(completion)
            pred = block if block is not None else None
        if pred is None and MARKER in completion.lower():
            pred = completion[completion.lower().rfind(MARKER) + len(MARKER) :].strip()
        return answers.is_equivalent(pred, example["answer"])

    def _reward(self, completion: str, example: dict[str, Any], compat: str) -> float:
        if compat == "d1":
            return 2.0 * self._correct_d1(completion, example) + self._format_d1(completion)
        block = answers.last_answer(completion)
        text = block if block is not None else completion
        fmt = 0.5 * (float(block is not None) + (1.0 if "\\boxed" in text else 0.5))
        return 2.0 * self._correct(completion, example) + fmt

    def _metrics(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return {"correct": float(self._correct(completion, example))}
