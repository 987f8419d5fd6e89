"""A small, safe converter of simple LaTeX math answers to sympy, and numeric equivalence.

Used for MATH500-style answer checking (SPG arXiv:2510.09541 §7; JEPO arXiv:2503.19618 uses
SymPy-verified rewards). `sympy.parsing.latex` needs antlr and `parse_expr` evaluates Python, so we
parse a whitelisted subset ourselves and build sympy objects directly: numbers, single-letter
variables, `+ - * / ^`, implicit multiplication, `\\frac`, `\\sqrt[n]{}`, `\\pi`, `\\infty`,
`\\cdot`, `\\times`, `\\div`, brackets, and top-level tuples. Limits: 200 characters, nesting 20,
30-digit literals, exponents up to 1000, and any power whose exact value sympy would compute is
bounded before it is built (|exponent numerator| x bits of the base's numbers <= 4096). A deadline
is checked at every token, and the whole conversion and comparison run under a CPU-time signal
timer when called on the main thread (Python's garbage collector paused, so a slow collection of
the caller's objects does not turn a correct answer into a timeout). Values that are infinite,
NaN, undefined (`1/0`) or outside the float range (|x| > 1e300 or 0 < |x| < 1e-300) are never
equivalent to anything.
"""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import threading
import time

from data.safe_eval import gc_paused

MAX_CHARS = 200
MAX_DEPTH = 20
MAX_DIGITS = 30
MAX_EXPONENT = 1000
MAX_POWER_BITS = 4096  # bound on |exponent numerator| x bits of the base's exact numbers
MAX_MAGNITUDE = 1e300  # values beyond (or non-zero below 1/this) are out of range
_TOKEN_RE = re.compile(r"\\[a-zA-Z]+|\d+(?:\.\d+)?|\.\d+|[a-zA-Z]|[-+*/^(){}\[\],]")
_ALLOWED_CHARS = re.compile(r"[0-9a-zA-Z\\+\-*/^(){}\[\],. ]*")
_DROP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "$", "^\\circ", "^{\\circ}", "\\%")
_FUNCS = {"frac", "dfrac", "tfrac", "sqrt", "pi", "infty", "cdot", "times", "div"}


class LatexError(ValueError):
    """Not a supported, bounded LaTeX expression."""


@functools.cache
def _nonfinite() -> tuple:
    """sympy's non-finite atoms, resolved on first use (sympy is slow to import)."""
    import sympy

    return (sympy.oo, -sympy.oo, sympy.zoo, sympy.nan)


def _bits(expr) -> int:
    """Bits of the exact numbers in `expr` (what sympy multiplies when it expands a power)."""
    total = 0
    for a in expr.atoms():
        if a.is_Rational:
            total += int(a.p).bit_length() + int(a.q).bit_length()
        elif a.is_Number:  # a Float: its mantissa, exponent handled by mpmath
            total += 64
    return total


def _check_power(base, exponent) -> None:
    """Refuses `base^exponent` before sympy builds it if its exact value could be huge."""
    if exponent.free_symbols:
        return  # stays symbolic: 2^x is never expanded
    if not exponent.is_Rational:
        if exponent.has(*_nonfinite()):
            raise LatexError("non-finite exponent")
        return  # 2^{\\pi}: sympy keeps it unevaluated
    if abs(exponent) > MAX_EXPONENT:
        raise LatexError("exponent too large")
    if abs(int(exponent.p)) * max(_bits(base), 1) > MAX_POWER_BITS:
        raise LatexError("power too large")


class _Parser:
    def __init__(self, tokens: list[str], deadline: float):
        import sympy

        self.sp, self.tokens, self.pos, self.depth, self.deadline = sympy, tokens, 0, 0, deadline

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise LatexError(f"expected {expected!r}, got {tok!r}")
        if time.thread_time() > self.deadline:
            raise LatexError("time limit exceeded")
        self.pos += 1
        return tok

    def expr(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise LatexError("nested too deeply")
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        self.depth -= 1
        return value

    def starts_atom(self, tok: str | None) -> bool:
        return tok is not None and (
            tok[0].isalnum()
            or tok[0] == "."
            or tok in ("(", "{", "[")
            or tok[1:] in ("frac", "dfrac", "tfrac", "sqrt", "pi", "infty")
        )

    def term(self):
        value = self.signed()
        while True:
            tok = self.peek()
            if tok in ("*", "\\cdot", "\\times"):
                self.take()
                value = value * self.signed()
            elif tok in ("/", "\\div"):
                self.take()
                value = value / self.signed()
            elif self.starts_atom(tok):
                value = value * self.power()  # implicit multiplication: 2\pi, 3x, 2(x+1)
            else:
                return value

    def signed(self):
        if self.peek() in ("+", "-"):
            return -self.signed() if self.take() == "-" else self.signed()
        return self.power()

    def power(self):
        base = self.atom()
        if self.peek() == "^":
            self.take()
            exponent = self.group(single_digit=True)
            _check_power(base, exponent)
            base = self.sp.Pow(base, exponent)
        return base

    def group(self, single_digit: bool = False):
        """A `{...}` group or a single token (`\\frac12`, `x^2`: one digit)."""
        tok = self.peek()
        if tok == "{":
            return self.atom()
        if single_digit and tok is not None and tok.isdigit() and len(tok) > 1:
            self.tokens[self.pos] = tok[1:]
            return self.sp.Integer(int(tok[0]))
        if tok is not None and tok.isdigit() and len(tok) > 1:
            self.tokens[self.pos] = tok[1:]
            return self.sp.Integer(int(tok[0]))
        return self.atom()

    def atom(self):
        tok = self.take()
        sp = self.sp
        close = {"(": ")", "{": "}", "[": "]"}
        if tok in close:
            value = self.expr()
            self.take(close[tok])
            return value
        if tok[0].isdigit() or tok[0] == ".":
            if len(tok.replace(".", "")) > MAX_DIGITS:
                raise LatexError("number too long")
            return sp.Rational(tok)
        if len(tok) == 1 and tok.isalpha():
            return sp.Symbol(tok)
        name = tok[1:]
        if name in ("frac", "dfrac", "tfrac"):
            num = self.group()
            return num / self.group()
        if name == "sqrt":
            if self.peek() == "[":
                self.take()
                index = self.expr()
                self.take("]")
                return sp.root(self.group(), index)
            return sp.sqrt(self.group())
        if name == "pi":
            return sp.pi
        if name == "infty":
            return sp.oo
        raise LatexError(f"unsupported token {tok!r}")


def to_sympy(text: str, *, time_limit_s: float = 0.05) -> tuple:
    """Parses a LaTeX answer into a tuple of sympy expressions (one per top-level comma item).

    Raises:
      LatexError: for anything outside the supported subset or its limits.
    """
    s = text.strip()
    for d in _DROP:
        s = s.replace(d, "")
    s = re.sub(r"\\(?:text|mathrm|mbox)\{([^{}]*)\}", r"\1", s)
    if len(s) > MAX_CHARS or not _ALLOWED_CHARS.fullmatch(s):
        raise LatexError("characters outside the whitelist or too long")
    tokens = _TOKEN_RE.findall(s.replace(" ", ""))
    if "".join(tokens) != s.replace(" ", ""):
        raise LatexError("untokenisable input")
    if any(t[0] == "\\" and t[1:] not in _FUNCS for t in tokens):
        raise LatexError("unsupported command")
    if not tokens:
        raise LatexError("empty")
    parser = _Parser(tokens, time.thread_time() + time_limit_s)
    items = [parser.expr()]
    while parser.peek() == ",":
        parser.take()
        items.append(parser.expr())
    if parser.peek() is not None:
        raise LatexError(f"trailing token {parser.peek()!r}")
    return tuple(items)


@contextlib.contextmanager
def _alarm(seconds: float):
    """Raises TimeoutError after `seconds` of CPU time (main thread only; elsewhere inputs are
    size-bounded and the parser deadline still applies)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise TimeoutError

    # CPU-time timer: a busy shared machine must not turn a correct answer into a timeout.
    previous = signal.signal(signal.SIGVTALRM, handler)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


@functools.cache
def warm_up() -> None:
    """Imports sympy and runs one comparison outside any clock: cold sympy calls take ~0.5 s."""
    x, y = to_sympy("(x+1)^2", time_limit_s=10.0)[0], to_sympy("x^2+2x+1", time_limit_s=10.0)[0]
    (
        _numeric(x, 0.5),
        _numeric(y, 0.5),
        _numeric(to_sympy("2\\sqrt{3}\\pi", time_limit_s=10.0)[0], 0),
    )


_POINTS = (0.3719, 1.6180, 2.7183)  # generic values for free symbols


def _in_range(x) -> bool:
    return x == 0 or (1.0 / MAX_MAGNITUDE < abs(x) < MAX_MAGNITUDE)


def _numeric(expr, point: float) -> complex:
    """The value at `point`; raises OverflowError if it is non-finite or out of the float range."""
    subs = {s: point + 0.1 * i for i, s in enumerate(sorted(expr.free_symbols, key=str))}
    value = expr.evalf(30, subs=subs)
    if value.has(*_nonfinite()) or not value.is_number:
        raise OverflowError("non-finite value")
    re_part, im_part = value.as_real_imag()
    if not (re_part.is_Number and im_part.is_Number):
        raise OverflowError("not a number")
    re_f, im_f = (mpmath_value(p) for p in (re_part, im_part))
    if not (_in_range(re_f) and _in_range(im_f)):
        raise OverflowError("out of range")
    return complex(float(re_f), float(im_f))


def mpmath_value(x):
    """A sympy Number as an mpmath number (arbitrary exponent, so 10^400 stays 10^400)."""
    import mpmath

    return mpmath.mpf(x._as_mpf_val(60)) if x.is_Float else mpmath.mpf(x.evalf(30)._as_mpf_val(60))


def equivalent(a: str, b: str, *, time_limit_s: float = 0.05, rel_tol: float = 1e-9) -> bool:
    """Whether two LaTeX answers denote the same values (numeric check at fixed points).

    Both sides must parse with `to_sympy` and have the same number of tuple items; each pair must
    agree at three substitution points of their free symbols. Any failure or timeout gives False.
    """
    warm_up()
    try:
        # The whole conversion and comparison, not only the last part; a garbage collection of
        # the caller's objects is not this comparison's time (see `gc_paused`).
        with gc_paused(), _alarm(time_limit_s):
            ea = to_sympy(a, time_limit_s=time_limit_s)
            eb = to_sympy(b, time_limit_s=time_limit_s)
            if len(ea) != len(eb):
                return False
            for x, y in zip(ea, eb, strict=True):
                if x.free_symbols != y.free_symbols or x.has(*_nonfinite()) or y.has(*_nonfinite()):
                    return False
                if x.is_Rational and y.is_Rational and x != y:
                    return False  # exact numbers compare exactly, not within a tolerance
                for point in _POINTS:
                    vx, vy = _numeric(x, point), _numeric(y, point)  # both finite, in range
                    if x != y and not (abs(vx - vy) <= rel_tol * max(1.0, abs(vx), abs(vy))):
                        return False
        return True
    except (LatexError, TimeoutError, ValueError, TypeError, ZeroDivisionError, OverflowError):
        return False
    except Exception:  # sympy raises many types on odd input; any failure means "not shown equal"
        return False
