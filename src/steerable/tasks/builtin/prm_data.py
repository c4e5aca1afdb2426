"""What the built-in PRM learns from and is measured on: planted errors with consistent continuations.

The policy's own samples teach a PRM the errors the policy makes, but they are
few and the PRM trained on them alone learnt arithmetic consistency, not
correctness: a solution that takes a wrong operand and then computes and
``check``-s consistently scored high. :func:`plant` writes exactly those
solutions, one error kind at a time, and every kind continues *consistently*
from the wrong line (the chain goes on from the wrong value, ``check`` lines
repeat the wrong step), so the only way to score them low is to find the
wrong line:

======== =====================================================================
kind     the first wrong line
======== =====================================================================
skip     the step takes the operation after the right one (one is skipped)
repeat   the step repeats the previous operation
swap     two neighbouring operations are taken in the other order
digit    one digit of the line's result is wrong (the rest of the line right)
operand  one digit of the operand is wrong, dropped or added; the arithmetic
         on the wrong operand is right
chain    the first operand is not the previous result (one digit off); the
         arithmetic on it is right
check    a ``check`` line repeating a wrong step (measured at the check line)
recheck  a ``check`` line that does not repeat a right step (one digit off)
answer   the answer line: one digit off, or an answer before the last step
======== =====================================================================
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from steerable.tasks.builtin.arithmetic import MAX_VALUE, Problem, apply
from steerable.tasks.builtin.verifier import prefix_correct

KINDS = ("skip", "repeat", "swap", "digit", "operand", "chain", "check", "recheck", "answer")
#: The kinds issue 15 names; each must be detected >= 90% of the time.
GOAL_KINDS = ("skip", "repeat", "swap", "digit", "check")

Op = tuple[str, int]
Line = tuple[int, str, int, int]  # a op b = c


@dataclass(frozen=True)
class Planted:
    """A solution with one planted error, and the correct solution it came from (same style)."""

    prompt: str
    solution: str
    correct: str
    line: int  # index of the line the error is measured at (the first wrong line; the check line for "check")
    kind: str


def chain(a: int, ops: list[Op]) -> list[Line] | None:
    """The steps of applying ``ops`` left to right from ``a``; None if a result leaves 0..MAX_VALUE."""
    out = []
    for op, b in ops:
        c = apply(a, op, b)
        if not 0 <= c <= MAX_VALUE:
            return None
        out.append((a, op, b, c))
        a = c
    return out


def write(steps: list[Line], verbose: bool, answer: int | None = None) -> str:
    """Solution text: every step (and its ``check`` line when verbose), then ``A: answer``."""
    lines = []
    for a, op, b, c in steps:
        lines.append(f"{a}{op}{b}={c}")
        if verbose:
            lines.append(f"check {a}{op}{b}={c}")
    lines.append(f"A: {steps[-1][3] if answer is None else answer}")
    return "\n".join(lines)


def one_digit_off(rng: random.Random, n: int, lo: int = 0, hi: int = MAX_VALUE) -> int | None:
    """``n`` with one decimal digit changed (no new leading zero), within [lo, hi]; None if none is."""
    s = str(n)
    options = []
    for i, ch in enumerate(s):
        for d in "0123456789":
            if d != ch and not (i == 0 and d == "0" and len(s) > 1):
                v = int(s[:i] + d + s[i + 1 :])
                if lo <= v <= hi:
                    options.append(v)
    return rng.choice(options) if options else None


def operand_slip(rng: random.Random, b: int, op: str) -> int | None:
    """A copying slip of an operand: one digit changed, a digit dropped or a digit added (``+9`` -> ``+94``)."""
    lo, hi = (2, 9) if op == "*" else (1, 99)
    s, r = str(b), rng.random()
    if r < 0.25 and len(s) == 2:
        v = int(s[rng.randrange(2)])
    elif r < 0.5 and len(s) == 1:
        v = int(s + str(rng.randrange(10))) if rng.random() < 0.5 else int(str(rng.randrange(1, 10)) + s)
    else:
        v = one_digit_off(rng, b, lo, hi)
    return v if v is not None and v != b and lo <= v <= hi else None


def _ops(p: Problem) -> list[Op]:
    return list(zip(p.ops, p.operands[1:], strict=True))


def _attempt(rng: random.Random, p: Problem, kind: str, verbose: bool) -> str | None:
    ops, a0, n = _ops(p), p.operands[0], p.n_ops
    good = chain(a0, ops)
    assert good is not None
    if kind == "skip" and n >= 2:
        k = rng.randrange(n - 1)
        steps = chain(a0, ops[:k] + ops[k + 1 :])
    elif kind == "repeat":
        k = rng.randrange(1, n + 1) if n >= 2 else 1
        steps = chain(a0, ops[:k] + [ops[k - 1]] + ops[k:])
    elif kind == "swap" and n >= 2:
        k = rng.randrange(n - 1)
        steps = chain(a0, ops[:k] + [ops[k + 1], ops[k]] + ops[k + 2 :])
    elif kind in ("digit", "operand", "chain", "check"):
        k = rng.randrange(n)
        a, op, b, c = good[k]
        how = rng.choice(("digit", "operand", "chain")) if kind == "check" else kind
        if how == "digit":
            c2 = one_digit_off(rng, c)
            wrong = None if c2 is None else (a, op, b, c2)
        elif how == "operand":
            b2 = operand_slip(rng, b, op)
            wrong = None if b2 is None else (a, op, b2, apply(a, op, b2))
        else:
            a2 = one_digit_off(rng, a)
            wrong = None if a2 is None else (a2, op, b, apply(a2, op, b))
        if wrong is None or not 0 <= wrong[3] <= MAX_VALUE:
            return None
        rest = chain(wrong[3], ops[k + 1 :])
        steps = None if rest is None else [*good[:k], wrong, *rest]
        if kind == "check":
            verbose = True
    elif kind == "recheck":
        k = rng.randrange(n)
        lines = write(good, True).split("\n")
        a, op, b, c = good[k]
        field = rng.randrange(3)
        vals = [a, b, c]
        v = one_digit_off(rng, vals[field])
        if v is None:
            return None
        vals[field] = v
        lines[2 * k + 1] = f"check {vals[0]}{op}{vals[1]}={vals[2]}"
        return "\n".join(lines)
    elif kind == "answer":
        if n >= 2 and rng.random() < 0.5:
            k = rng.randrange(1, n)
            return write(good[:k], verbose)
        wrong_answer = one_digit_off(rng, good[-1][3])
        return None if wrong_answer is None else write(good, verbose, wrong_answer)
    else:
        return None
    return None if not steps else write(steps, verbose)


def plant(rng: random.Random, p: Problem, kind: str, verbose: bool | None = None, tries: int = 20) -> Planted | None:
    """``p``'s solution with one error of ``kind`` and a consistent continuation, or None if none fits ``p``.

    ``verbose`` picks the style (random when None; ``check`` is always verbose).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown error kind {kind!r}: use one of {', '.join(KINDS)}")
    for _ in range(tries):
        style = rng.random() < 0.5 if verbose is None else verbose
        text = _attempt(rng, p, kind, style)
        if text is None:
            continue
        flags = prefix_correct(p, text)
        if all(flags):
            continue  # the slip happened to give a right line (e.g. swapping two equal operations)
        first = flags.index(False)
        is_verbose = "check" in text or kind == "check"
        if kind == "check":
            if first + 1 >= len(flags) or not text.split("\n")[first + 1].startswith("check"):
                continue
            first += 1
        correct = p.solution("verbose" if is_verbose else "concise")
        return Planted(p.prompt, text, correct, first, kind)
    return None


def partial(solution: str, line: int) -> str:
    """The first ``line + 1`` lines of ``solution`` as a search process shows them (newline-terminated if more)."""
    lines = solution.split("\n")
    head = "\n".join(lines[: line + 1])
    return head + "\n" if line + 1 < len(lines) else head
