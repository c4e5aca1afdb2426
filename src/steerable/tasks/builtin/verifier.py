"""Exact checker for built-in arithmetic solutions.

Works on arbitrary model text and never raises: lines that do not parse are
simply wrong steps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from steerable.tasks.builtin.arithmetic import Problem, apply, parse_problem

_STEP = re.compile(r"^\s*(check\s+)?(\d+)\s*([+\-*])\s*(\d+)\s*=\s*(\d+)\s*$")
_ANSWER = re.compile(r"A:\s*(-?\d+)")


def extract_answer(text: str) -> int | None:
    """The integer after the last ``A:`` in ``text``, or None."""
    found = _ANSWER.findall(text or "")
    return int(found[-1]) if found else None


@dataclass(frozen=True)
class StepCheck:
    line: str
    correct: bool
    reason: str


def check_steps(problem: Problem | str, solution: str) -> list[StepCheck]:
    """Judge every line of a (partial) solution.

    A computation line ``a op b=c`` is correct when the arithmetic holds, ``a``
    is the previous result (the first operand for the first step) and ``op b``
    is the problem's next operation. A ``check ...`` line is correct when it
    repeats the step just computed. ``A: n`` is correct when ``n`` is the
    problem's answer and every operation has been applied. Once a line is
    wrong, later lines are judged against the chain as written, but the
    solution is off the correct path (see :func:`prefix_correct`).
    """
    if isinstance(problem, str):
        parsed = parse_problem(problem)
        if parsed is None:
            return [StepCheck(ln, False, "unparseable problem") for ln in (solution or "").split("\n") if ln.strip()]
        problem = parsed
    steps = problem.steps
    out: list[StepCheck] = []
    acc, idx, last = problem.operands[0], 0, None
    for line in (solution or "").split("\n"):
        if not line.strip():
            continue
        m = _STEP.match(line)
        if m:
            is_check = bool(m.group(1))
            a, op, b, c = int(m.group(2)), m.group(3), int(m.group(4)), int(m.group(5))
            if is_check:
                ok = last is not None and (a, op, b, c) == last
                out.append(StepCheck(line, ok, "repeats last step" if ok else "check does not repeat last step"))
                continue
            if idx >= len(steps):
                out.append(StepCheck(line, False, "more steps than operations"))
                continue
            want = steps[idx]
            if apply(a, op, b) != c:
                reason = "arithmetic wrong"
            elif a != acc:
                reason = "not chained from previous result"
            elif (op, b) != (want.op, want.b):
                reason = "wrong operation for this step"
            else:
                reason = ""
            out.append(StepCheck(line, not reason, reason or "correct"))
            acc, idx, last = c, idx + 1, (a, op, b, c)
            continue
        ans = _ANSWER.fullmatch(line.strip())
        if ans:
            n = int(ans.group(1))
            ok = idx == len(steps) and n == problem.answer
            out.append(StepCheck(line, ok, "correct answer" if ok else "wrong or early answer"))
            continue
        out.append(StepCheck(line, False, "not a step"))
    return out


def prefix_correct(problem: Problem | str, solution: str) -> list[bool]:
    """For each line, whether every line up to and including it is correct."""
    flags, ok = [], True
    for check in check_steps(problem, solution):
        ok = ok and check.correct
        flags.append(ok)
    return flags


def is_correct(problem: Problem | str, solution: str) -> bool:
    """Whether the final answer extracted from ``solution`` is the problem's answer."""
    if isinstance(problem, str):
        problem = parse_problem(problem)  # type: ignore[assignment]
        if problem is None:
            return False
    return extract_answer(solution) == problem.answer


class OraclePRM:
    """The exact step checker as a PRM: 1 if every line so far is correct, else 0."""

    range = (0.0, 1.0)

    def __init__(self) -> None:
        self.calls = 0
        self.forward_tokens = 0  # no model

    def score(self, prompts: Sequence[str], samples: Sequence[str]) -> list[float]:
        self.calls += 1
        out = []
        for p, s in zip(prompts, samples, strict=True):
            flags = prefix_correct(p, s)
            out.append(1.0 if (not flags or flags[-1]) else 0.0)
        return out
