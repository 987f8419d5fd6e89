"""The interface of every verifiable-reward task (SPG arXiv:2510.09541 §7, JEPO 2503.19618).

A task generates (or loads) examples as plain dicts, renders prompts and reference completions in
two styles (`"paper"`: the reference code's prompts and `<reasoning>/<answer>` format; `"compact"`:
short prompts for tiny models trained from scratch), and scores completions. Rewards never raise:
model text is hostile, so `reward` and `metrics` catch everything, and over-long text scores 0.
"""

from __future__ import annotations

import abc
import random
from typing import Any

from data.answers import MAX_COMPLETION_CHARS

STYLES = ("compact", "paper")
COMPAT = ("fixed", "d1")

# The reference training system prompt (SPG/d1 `SYSTEM_PROMPT`).
SYSTEM_PROMPT = (
    "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"
)


def xml_completion(reasoning: str, answer: str) -> str:
    """A reference completion in the paper's `<reasoning>/<answer>` format."""
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>"


def rng_for(name: str, split: str, seed: int) -> random.Random:
    """A generator private to (task, split, seed): string seeds hash with SHA-512, so stable."""
    return random.Random(f"{name}/{split}/{seed}")


class Task(abc.ABC):
    """Base class. Subclasses set `name`, `features` and implement the abstract methods.

    `features` maps each example field to `"text"`, `"int"` or `"int_list"` (used by the TFDS
    builders). `generated` says whether `generate` works (file-backed tasks use `load`).
    `answer_marker` is the text before the final answer in a chain of thought (JEPO cuts its
    generations there, arXiv:2503.19618); empty when the task's completions have none.
    """

    name: str = ""
    features: dict[str, str] = {}
    generated: bool = True
    answer_marker: str = ""

    def generate(self, split: str, num: int, seed: int) -> list[dict[str, Any]]:
        """Deterministically generates `num` examples of `split` ("train"/"test") from `seed`."""
        raise NotImplementedError(f"task {self.name!r} loads files; use load(path)")

    @abc.abstractmethod
    def prompt(self, example: dict[str, Any], style: str = "compact") -> str:
        """The prompt text for `example`."""

    @abc.abstractmethod
    def target(self, example: dict[str, Any], style: str = "compact") -> str:
        """A reference completion (for SFT warm-start) in the format `reward` parses."""

    @abc.abstractmethod
    def _reward(self, completion: str, example: dict[str, Any], compat: str) -> float: ...

    @abc.abstractmethod
    def _metrics(self, completion: str, example: dict[str, Any]) -> dict[str, float]: ...

    def reward_range(self, compat: str = "fixed") -> tuple[float, float]:
        """Inclusive bounds of `reward` under `compat`."""
        return (0.0, 1.0)

    def reward(self, completion: str, example: dict[str, Any], compat: str = "fixed") -> float:
        """Scores a completion; never raises (a failure scores 0).

        Args:
          completion: decoded model text (hostile input).
          example: the example dict from `generate`/`load`.
          compat: `"fixed"` (correct parsing) or `"d1"` (the reference code's behaviour, bugs kept).

        Returns:
          A float within `reward_range(compat)`.
        """
        if compat not in COMPAT:
            raise ValueError(f"compat must be one of {COMPAT}, got {compat!r}")
        if not isinstance(completion, str) or len(completion) > MAX_COMPLETION_CHARS:
            return 0.0
        try:
            return float(self._reward(completion, example, compat))
        except Exception:  # noqa: BLE001 - a reward must never crash training on odd text
            return 0.0

    def metrics(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        """Per-example evaluation metrics (e.g. `correct`, `cell_accuracy`); never raises."""
        keys = self.metric_names()
        if not isinstance(completion, str) or len(completion) > MAX_COMPLETION_CHARS:
            return dict.fromkeys(keys, 0.0)
        try:
            return {k: float(v) for k, v in self._metrics(completion, example).items()}
        except Exception:  # noqa: BLE001
            return dict.fromkeys(keys, 0.0)

    def metric_names(self) -> tuple[str, ...]:
        return ("correct",)


def check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")


def final_line(text: str) -> str | None:
    """The last non-empty line (compact-style answers carry no tags)."""
    for line in reversed(text.strip().splitlines()):
        if line.strip():
            return line.strip()
    return None
