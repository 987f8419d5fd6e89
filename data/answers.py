"""Answer extraction and equivalence for math rewards (SPG arXiv:2510.09541 §7; JEPO 2503.19618).

Extraction: `<answer>` blocks, `\\boxed{}` (brace-matched), the last number. Equivalence: exact
string after the Hendrycks MATH normalisation, then exact numbers, then LaTeX converted to sympy by
our own small parser (`data.latex`) and compared numerically at fixed points under a time limit.

Also holds the reference code's extraction helpers (`d1_*`), reproduced for `compat="d1"` rewards.
All functions are linear-time in the input and never evaluate model text as code.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_COMPLETION_CHARS = 16384  # longer completions are treated as malformed (reward floor)
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def answer_blocks(text: str) -> list[str]:
    """Contents of `<answer>...</answer>` blocks, as `re.findall("<answer>(.*?)</answer>", DOTALL)`.

    Written as a linear scan: the lazy regex is quadratic on text with many unclosed tags.
    """
    out, pos = [], 0
    while True:
        start = text.find("<answer>", pos)
        if start < 0:
            return out
        end = text.find("</answer>", start + 8)
        if end < 0:
            return out
        out.append(text[start + 8 : end])
        pos = end + 9


def last_answer(text: str) -> str | None:
    """Stripped content of the last `<answer>` block, or None if there is none."""
    blocks = answer_blocks(text)
    return blocks[-1].strip() if blocks else None


def d1_extract_xml_answer(text: str) -> str:
    """Reference `extract_xml_answer`: text after the last `<answer>`, cut at `</answer>`."""
    return text.split("<answer>")[-1].split("</answer>")[0].strip()


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) with nested braces, else None."""
    for command in ("\\boxed", "\\fbox"):
        idx = text.rfind(command)
        if idx < 0:
            continue
        i = idx + len(command)
        if text[i : i + 1] == " ":  # `\boxed 5`
            return text[i + 1 :].split("$")[0].strip() or None
        if text[i : i + 1] != "{":
            return None
        depth = 0
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1 : j]
        return None
    return None


def d1_last_boxed_only_string(text: str) -> str | None:
    """Reference `last_boxed_only_string`: the whole `\\boxed{...}`, the input if absent, None."""
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    idx = text.rfind("\\boxed")
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return text
    depth = 0
    for j in range(idx, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if text[j] == "}" and depth == 0:
            return text[idx : j + 1]
    return None


def d1_remove_boxed(s: str | None) -> str:
    """Reference `remove_boxed` (raises TypeError on None, as the reference does)."""
    if "\\boxed " in s:  # type: ignore[operator]
        return s[len("\\boxed ") :] if s.startswith("\\boxed ") else _raise()
    if s.startswith("\\boxed{") and s.endswith("}"):
        return s[len("\\boxed{") : -1]
    return s


def _raise():
    raise AssertionError("malformed \\boxed")


def last_number(text: str) -> str | None:
    """The last number in `text` (commas removed), e.g. `"so 1,200."` -> `"1200"`."""
    matches = _NUMBER_RE.findall(text)
    return matches[-1].replace(",", "") if matches else None


def parse_number(text: str | None) -> Fraction | None:
    """Parses a plain numeric answer (`1,200`, `$5`, `-3.5`, `7/2`, `50%`); None if not numeric."""
    if text is None:
        return None
    s = text.strip().replace(",", "").replace("$", "").replace("\\%", "").rstrip("%").strip()
    s = s.rstrip(".")
    if not s or len(s) > 64 or not re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)(/\d+)?", s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


# --- Hendrycks MATH normalisation (the reference `strip_string`), written from its description ---


class _NormaliseError(Exception):
    pass


def _fix_fracs(s: str) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for sub in parts[1:]:
        out += "\\frac"
        if sub[:1] == "{":
            out += sub
            continue
        if len(sub) < 2:
            raise _NormaliseError
        a, b, rest = sub[0], sub[1], sub[2:]
        out += "{" + a + "}" + (("{" + b + "}") if b != "{" else b) + rest
    return out


def _fix_a_slash_b(s: str) -> str:
    parts = s.split("/")
    if len(parts) != 2 or not all(re.fullmatch(r"-?\d+", p) for p in parts):
        return s
    a, b = int(parts[0]), int(parts[1])
    if s != f"{a}/{b}":
        raise _NormaliseError
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _fix_sqrt(s: str) -> str:
    if "\\sqrt" not in s:
        return s
    parts = s.split("\\sqrt")
    out = parts[0]
    for sub in parts[1:]:
        if not sub:
            raise _NormaliseError
        out += "\\sqrt" + (sub if sub[0] == "{" else "{" + sub[0] + "}" + sub[1:])
    return out


def normalize_latex(s: str) -> str:
    """Hendrycks MATH answer normalisation; raises `ValueError` where the reference would fail."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:
        units = s.split("\\text{ ")
        if len(units) != 2:
            raise ValueError("several \\text{ } units")
        s = units[0]
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    halves = s.split("=")
    if len(halves) == 2 and len(halves[0]) <= 2:
        s = halves[1]
    try:
        s = _fix_sqrt(s).replace(" ", "")
        s = _fix_fracs(s)
        if s == "0.5":
            s = "\\frac{1}{2}"
        return _fix_a_slash_b(s)
    except _NormaliseError as e:
        raise ValueError("unnormalisable answer") from e


def d1_is_equiv(a: str | None, b: str | None) -> bool:
    """Reference `is_equiv`: normalised string equality (raw equality where normalising fails)."""
    if a is None or b is None:
        return a is None and b is None
    try:
        return normalize_latex(a) == normalize_latex(b)
    except ValueError:
        return a == b


def is_equivalent(pred: str | None, ref: str | None, *, time_limit_s: float = 0.05) -> bool:
    """Whether a predicted final answer equals the reference answer.

    Checks, in order: normalised string equality, exact numeric equality, then symbolic equality
    via `data.latex.to_sympy` compared numerically (bounded size and time).

    Args:
      pred: extracted model answer (e.g. the last `\\boxed{}` content).
      ref: reference answer.
      time_limit_s: budget for the symbolic comparison.

    Returns:
      True if judged equivalent.
    """
    if pred is None or ref is None:
        return False
    pred, ref = pred.strip(), ref.strip()
    if not pred or len(pred) > 256:
        return False
    try:
        if normalize_latex(pred) == normalize_latex(ref):
            return True
    except ValueError:
        pass
    p_num, r_num = parse_number(pred), parse_number(ref)
    if p_num is not None and r_num is not None:
        return p_num == r_num
    from data import latex  # lazy: sympy is slow to import

    return latex.equivalent(pred, ref, time_limit_s=time_limit_s)
