"""Format rewards of the reference GSM8K recipe (SPG arXiv:2510.09541 §7; d1/Unsloth lineage).

Reward terms: xmlcount (+0.125 per tag occurring exactly once, −0.001 per trailing character), soft
format (+0.5), strict format (+0.5), integer answer (+0.5). `compat="d1"` reproduces the reference
regexes, which use `re.match` without DOTALL, so multi-line reasoning never matches (known bug 1).
`compat="fixed"` gives those patterns DOTALL semantics, tolerates one trailing newline in the strict
form, and floors xmlcount at 0. The fixed checks are linear scans (the lazy regexes backtrack
quadratically on hostile text).
"""

from __future__ import annotations

import re

_D1_STRICT = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$")
_D1_SOFT = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>")


def count_xml(text: str, compat: str = "fixed") -> float:
    """The xmlcount term: 0.125 per tag seen exactly once, minus 0.001 per trailing character."""
    count = 0.0
    if text.count("<reasoning>\n") == 1:
        count += 0.125
    if text.count("\n</reasoning>\n") == 1:
        count += 0.125
    if text.count("\n<answer>\n") == 1:
        count += 0.125 - len(text.split("\n<answer>\n")[-1]) * 0.001
    if text.count("\n</answer>") == 1:
        count += 0.125 - (len(text.split("\n</answer>")[-1]) - 1) * 0.001
    return count if compat == "d1" else max(count, 0.0)


def soft_format(text: str, compat: str = "fixed") -> bool:
    """`<reasoning>.*?</reasoning>\\s*<answer>.*?</answer>` anchored at the start."""
    if compat == "d1":
        return _d1_soft_format(text)
    if not text.startswith("<reasoning>"):
        return False
    last_close = text.rfind("</answer>")
    pos = text.find("</reasoning>", len("<reasoning>"))
    while pos >= 0:
        after = pos + len("</reasoning>")
        j = after
        while j < len(text) and text[j].isspace():
            j += 1
        if text.startswith("<answer>", j) and last_close >= j + len("<answer>"):
            return True
        pos = text.find("</reasoning>", after)
    return False


def _d1_soft_format(text: str) -> bool:
    """`_D1_SOFT.match(text)` (no DOTALL: `.` stops at newlines) as a linear scan."""
    if not text.startswith("<reasoning>"):
        return False
    line_end = text.find("\n", len("<reasoning>"))
    line_end = len(text) if line_end < 0 else line_end
    close = newline = -1  # cached next `</answer>` / newline, reused while still ahead
    pos = text.find("</reasoning>", len("<reasoning>"))
    while 0 <= pos < line_end:
        j = pos + len("</reasoning>")
        while j < len(text) and text[j].isspace():
            j += 1
        if text.startswith("<answer>", j):
            start = j + len("<answer>")
            if close < start:
                close = text.find("</answer>", start)
            if newline < start:
                newline = text.find("\n", start)
                newline = len(text) if newline < 0 else newline
            if 0 <= close < newline:
                return True
        pos = text.find("</reasoning>", pos + 1)
    return False


def strict_format(text: str, compat: str = "fixed") -> bool:
    """The strict format `^<reasoning>\\n.*?\\n</reasoning>\\n<answer>\\n.*?\\n</answer>\\n$`.

    d1 applies the regex without DOTALL; fixed has DOTALL semantics and an optional final newline.
    Fixed mode is a linear scan: the earliest separator after the head decides.
    """
    if compat == "d1":
        return _D1_STRICT.match(text) is not None
    head, sep = "<reasoning>\n", "\n</reasoning>\n<answer>\n"
    body = text[:-1] if text.endswith("\n") else text
    if not (body.startswith(head) and body.endswith("\n</answer>")):
        return False
    end = len(body) - len("\n</answer>")
    first = text.find(sep, len(head))
    return 0 <= first and first + len(sep) <= end


def int_answer(answer: str, compat: str = "fixed") -> bool:
    """Whether the extracted answer is an integer (d1: `str.isdigit`, admitting Unicode digits)."""
    if compat == "d1":
        return answer.isdigit()
    return re.fullmatch(r"-?[0-9]+", answer.replace(",", "")) is not None
