"""Safe arithmetic for Countdown answers: our own tokenizer, parser and evaluator (never `eval`).

Countdown rewards in SPG (arXiv:2510.09541, §7) and d1 evaluate model-written expressions. The
reference code calls Python `eval` behind a character whitelist, which still admits `9**9**9**9`
(an effectively endless computation). Here model text is hostile input: we parse it with a small
recursive-descent parser over exact `Fraction`s, with hard limits on input length, parenthesis
nesting, literal size, intermediate size and CPU time of the calling thread (garbage collection
excluded: see `gc_paused`). Any violation raises `EvalError`.

Grammar (fixed mode)::

    expr   := term (('+' | '-') term)*
    term   := unary (('*' | '/') unary)*
    unary  := ('+' | '-') unary | atom
    atom   := INT | '(' expr ')'

`python_ops=True` (used by `compat="d1"`) adds what the reference's `eval` accepts on the same
whitelist: decimal literals, `**` (right-associative, binds tighter than unary minus on its left)
and `//`, with Python's rule that a non-zero integer literal may not start with `0`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import time
from fractions import Fraction

MAX_CHARS = 512  # longer expressions are not Countdown answers
MAX_DEPTH = 32  # parenthesis nesting (also bounds parser recursion)
MAX_LITERAL_DIGITS = 18
MAX_VALUE_BITS = 2048  # numerator/denominator size bound for every intermediate
MAX_EXPONENT = 64  # `**` only (d1 mode)
MAX_POWERS = 8  # `**` operators per expression (each nests the parser's recursion)
TIME_LIMIT_S = 0.02

_OPS = ("**", "//", "+", "-", "*", "/", "(", ")")


class EvalError(ValueError):
    """The text is not a valid, bounded arithmetic expression."""


@dataclasses.dataclass(frozen=True)
class Literal:
    """A number literal token: its text and exact value."""

    text: str
    value: Fraction


def tokenize(text: str, *, python_ops: bool = False) -> list[Literal | str]:
    """Splits `text` into literals and operator strings, enforcing the length and nesting limits.

    Args:
      text: the expression (whitespace is ignored between tokens).
      python_ops: also accept decimals, `**` and `//` (reference-`eval` compatibility).

    Returns:
      Tokens: `Literal`s and operator strings from `_OPS`.
    """
    if len(text) > MAX_CHARS:
        raise EvalError(f"expression longer than {MAX_CHARS} characters")
    tokens: list[Literal | str] = []
    depth, i, n = 0, 0, len(text)
    line_break = False  # Python's `eval` rejects a line break between tokens outside brackets
    while i < n:
        c = text[i]
        if c in " \t\n\r\f\v":
            if python_ops and (c == "\v" or (c in "\n\r" and depth == 0 and tokens)):
                line_break = True
            i += 1
            continue
        if line_break:
            raise EvalError("line break inside the expression")
        if "0" <= c <= "9" or (python_ops and c == "."):
            j = i
            while j < n and ("0" <= text[j] <= "9" or (python_ops and text[j] == ".")):
                j += 1
            tokens.append(_literal(text[i:j], python_ops))
            i = j
            continue
        op = text[i : i + 2] if text[i : i + 2] in ("**", "//") else c
        if op in ("**", "//") and not python_ops:
            raise EvalError(f"operator {op!r} not allowed")
        if op not in _OPS:
            raise EvalError(f"character {c!r} not allowed")
        depth += op == "("
        depth -= op == ")"
        if depth > MAX_DEPTH:
            raise EvalError(f"parentheses nested deeper than {MAX_DEPTH}")
        tokens.append(op)
        i += len(op)
    if tokens.count("**") > MAX_POWERS:
        raise EvalError(f"more than {MAX_POWERS} '**' operators")
    return tokens


def _literal(s: str, python_ops: bool) -> Literal:
    digits = s.replace(".", "")
    if len(digits) > MAX_LITERAL_DIGITS:
        raise EvalError("number literal too long")
    if s.count(".") > 1 or s == ".":
        raise EvalError(f"bad number {s!r}")
    if "." not in s and len(s) > 1 and s[0] == "0" and s.strip("0"):
        if python_ops:  # Python 3 rejects leading zeros in non-zero integer literals
            raise EvalError(f"leading zero in {s!r}")
    return Literal(s, Fraction(s))


class _Parser:
    def __init__(self, tokens: list[Literal | str], python_ops: bool, deadline: float):
        self.tokens, self.pos, self.python_ops, self.deadline = tokens, 0, python_ops, deadline

    def peek(self) -> Literal | str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> Literal | str | None:
        tok = self.peek()
        self.pos += 1
        return tok

    def check(self, value: Fraction) -> Fraction:
        if value.numerator.bit_length() > MAX_VALUE_BITS or value.denominator.bit_length() > (
            MAX_VALUE_BITS
        ):
            raise EvalError("intermediate value too large")
        if time.thread_time() > self.deadline:
            raise EvalError("time limit exceeded")
        return value

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            value = self.check(value + rhs if op == "+" else value - rhs)
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while self.peek() in ("*", "/", "//"):
            op = self.take()
            rhs = self.unary()
            if op == "*":
                value = self.check(value * rhs)
            elif rhs == 0:
                raise EvalError("division by zero")
            else:
                value = self.check(value / rhs if op == "/" else Fraction(value // rhs))
        return value

    def unary(self) -> Fraction:
        # Iterative over sign runs so `----...1` cannot exhaust the Python stack.
        sign = 1
        while self.peek() in ("+", "-"):
            sign = -sign if self.take() == "-" else sign
        return sign * self.power()

    def power(self) -> Fraction:
        base = self.atom()
        if self.python_ops and self.peek() == "**":
            self.take()
            exponent = self.unary()  # Python: the exponent may carry its own unary sign
            if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT:
                raise EvalError("exponent must be a small integer")
            if base == 0 and exponent < 0:
                raise EvalError("zero to a negative power")
            base = self.check(base ** int(exponent))
        return base

    def atom(self) -> Fraction:
        tok = self.take()
        if isinstance(tok, Literal):
            return tok.value
        if tok == "(":
            value = self.expr()
            if self.take() != ")":
                raise EvalError("unbalanced parentheses")
            return value
        raise EvalError(f"unexpected token {tok!r}")


def evaluate(
    text: str, *, python_ops: bool = False, time_limit_s: float = TIME_LIMIT_S
) -> Fraction:
    """Evaluates an arithmetic expression exactly.

    Args:
      text: the expression, e.g. `"(3+5)*2"`.
      python_ops: accept decimals, `**` and `//` like the reference code's whitelisted `eval`.
      time_limit_s: CPU-time budget for parsing and evaluation.

    Returns:
      The exact value as a `Fraction`.

    Raises:
      EvalError: on any syntax error, limit violation, division by zero or timeout.
    """
    with gc_paused():
        deadline = time.thread_time() + time_limit_s
        tokens = tokenize(text, python_ops=python_ops)
        if not tokens:
            raise EvalError("empty expression")
        parser = _Parser(tokens, python_ops, deadline)
        value = parser.expr()
        if parser.pos != len(tokens):
            raise EvalError(f"unexpected token {parser.peek()!r}")
        return value


@contextlib.contextmanager
def gc_paused():
    """Keeps Python's cyclic garbage collector out of a CPU-time budget.

    A collection runs on the thread that happens to allocate and, in a large process (a JAX
    training run holding many objects), can take longer than `TIME_LIMIT_S`: inside `evaluate`
    it would fail a valid answer with "time limit exceeded". The evaluator creates no reference
    cycles, so pausing the collector for one evaluation leaves nothing behind. A collector that
    was already disabled stays disabled.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def literals(text: str, *, python_ops: bool = False) -> list[Fraction]:
    """Returns the number literals of `text` in order (raises `EvalError` like `evaluate`)."""
    return [t.value for t in tokenize(text, python_ops=python_ops) if isinstance(t, Literal)]
