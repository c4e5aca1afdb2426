"""The calculator tool: integer arithmetic parsed by a recursive-descent parser, never ``eval``.

``+ - * ( )`` and unary minus on non-negative integers, with the usual
precedence. The text and every value are bounded, so nothing a caller sends
can make the server work without limit: at most :data:`MAX_CHARS` characters
and :data:`MAX_DEPTH` nested parentheses, and every intermediate value within
``±MAX_ABS``. Failures are :class:`CalcError` with a one-line reason.
"""

from __future__ import annotations

MAX_CHARS = 64
MAX_DEPTH = 8
MAX_ABS = 10**12


class CalcError(ValueError):
    """The expression cannot be evaluated; the message says why in one line."""


def evaluate(text: str) -> int:
    """The value of an arithmetic expression such as ``37*48+19`` or ``(3+4)*-2``."""
    if not isinstance(text, str):
        raise CalcError("expression must be text")
    s = text.replace(" ", "")
    if not s:
        raise CalcError("empty expression")
    if len(s) > MAX_CHARS:
        raise CalcError(f"expression longer than {MAX_CHARS} characters")
    bad = sorted({c for c in s if c not in "0123456789+-*()"})
    if bad:
        raise CalcError(f"unsupported character {bad[0]!r}: use digits, + - * and parentheses")
    value, pos = _sum(s, 0, 0)
    if pos != len(s):
        raise CalcError(f"unexpected {s[pos]!r} at position {pos}")
    return value


def _bounded(v: int) -> int:
    if abs(v) > MAX_ABS:
        raise CalcError(f"a value exceeds {MAX_ABS:.0e} in magnitude")
    return v


def _sum(s: str, i: int, depth: int) -> tuple[int, int]:
    v, i = _product(s, i, depth)
    while i < len(s) and s[i] in "+-":
        op = s[i]
        w, i = _product(s, i + 1, depth)
        v = _bounded(v + w if op == "+" else v - w)
    return v, i


def _product(s: str, i: int, depth: int) -> tuple[int, int]:
    v, i = _unary(s, i, depth)
    while i < len(s) and s[i] == "*":
        w, i = _unary(s, i + 1, depth)
        v = _bounded(v * w)
    return v, i


def _unary(s: str, i: int, depth: int) -> tuple[int, int]:
    if i < len(s) and s[i] == "-":
        v, i = _unary(s, i + 1, depth)
        return -v, i
    if i < len(s) and s[i] == "(":
        if depth >= MAX_DEPTH:
            raise CalcError(f"more than {MAX_DEPTH} nested parentheses")
        v, i = _sum(s, i + 1, depth + 1)
        if i >= len(s) or s[i] != ")":
            raise CalcError("missing ')'")
        return v, i + 1
    j = i
    while j < len(s) and s[j].isdigit():
        j += 1
    if j == i:
        raise CalcError(f"expected a number at position {i}" if i < len(s) else "expression ends early")
    if j - i > 13:
        raise CalcError(f"a number exceeds {MAX_ABS:.0e} in magnitude")
    return _bounded(int(s[i:j])), j
