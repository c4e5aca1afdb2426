"""Arithmetic chains of the built-in world.

A problem is a chain ``a0 op1 a1 op2 a2 ...`` evaluated strictly left to right:
every step applies the next operator to the previous result, whatever the
operator (``5-3*8`` means ``(5-3)*8``). Operands are 1-99, multiplication is
only by 2-9, and every intermediate result stays within 0-999.

Formats (fixed: search, steering, RL and the tests rely on them)::

    prompt:   "Q: 37+48-19=\\n"
    concise:  "37+48=85\\n85-19=66\\nA: 66"
    verbose:  "37+48=85\\ncheck 37+48=85\\n85-19=66\\ncheck 85-19=66\\nA: 66"

Both styles are followed by the tokenizer's EOS. Difficulty is the number of
operations, 1 to 8.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Literal

from steerable.errors import SteerableError

Style = Literal["concise", "verbose"]

MAX_VALUE = 999
SPLITS: dict[str, tuple[int, int]] = {"easy": (1, 2), "medium": (3, 4), "hard": (5, 8)}
ALL_OPS = (1, 8)
#: One problem in ``HELD_OUT_MODULUS`` (by a hash of its prompt) never appears in
#: training data; evaluation draws only from those, so accuracy is measured on
#: problems the model has never seen.
HELD_OUT_MODULUS = 16


def apply(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operator {op!r}")


@dataclass(frozen=True)
class Step:
    a: int
    op: str
    b: int
    result: int

    @property
    def text(self) -> str:
        return f"{self.a}{self.op}{self.b}={self.result}"


@dataclass(frozen=True)
class Problem:
    operands: tuple[int, ...]
    ops: tuple[str, ...]

    @property
    def n_ops(self) -> int:
        return len(self.ops)

    @property
    def expression(self) -> str:
        out = str(self.operands[0])
        for op, b in zip(self.ops, self.operands[1:], strict=True):
            out += f"{op}{b}"
        return out

    @property
    def prompt(self) -> str:
        return f"Q: {self.expression}=\n"

    @property
    def steps(self) -> tuple[Step, ...]:
        steps, acc = [], self.operands[0]
        for op, b in zip(self.ops, self.operands[1:], strict=True):
            result = apply(acc, op, b)
            steps.append(Step(acc, op, b, result))
            acc = result
        return tuple(steps)

    @property
    def answer(self) -> int:
        return self.steps[-1].result

    def solution(self, style: Style = "concise") -> str:
        lines = []
        for step in self.steps:
            lines.append(step.text)
            if style == "verbose":
                lines.append(f"check {step.text}")
        lines.append(f"A: {self.answer}")
        return "\n".join(lines)

    def corrected_solution(self, at: int, wrong: int) -> list[tuple[str, bool]]:
        """The verbose solution with step ``at`` first written with the ``wrong`` result, its check recomputing
        the right one (so the check fails) and the step written again right: ``(text, trained)`` segments, the
        wrong step untrained (the model learns to catch and mend a slip, not to make it)."""
        steps = self.steps
        out: list[tuple[str, bool]] = []
        done = ""
        for i, step in enumerate(steps):
            if i == at:
                out.append((done, True))
                out.append((f"{step.a}{step.op}{step.b}={wrong}\n", False))
                done = f"check {step.text}\n"
            done += f"{step.text}\ncheck {step.text}\n"
        out.append((done + f"A: {self.answer}", True))
        return [(t, trained) for t, trained in out if t]

    @property
    def held_out(self) -> bool:
        return zlib.crc32(self.prompt.encode()) % HELD_OUT_MODULUS == 0


def parse_problem(prompt: str) -> Problem | None:
    """The problem behind a prompt like ``Q: 37+48-19=``, or None."""
    text = prompt.strip()
    if not text.startswith("Q:") or not text.endswith("="):
        return None
    expr = text[2:-1].strip()
    operands, ops, num = [], [], ""
    for ch in expr:
        if ch.isdigit():
            num += ch
        elif ch in "+-*" and num:
            operands.append(int(num))
            ops.append(ch)
            num = ""
        else:
            return None
    if not num or not ops:
        return None
    operands.append(int(num))
    return Problem(tuple(operands), tuple(ops))


def sample_problem(rng: random.Random, n_ops: int) -> Problem:
    """A random chain with ``n_ops`` operations under the world's rules."""
    acc = rng.randint(1, 99)
    operands, ops = [acc], []
    for _ in range(n_ops):
        choices = ["-"] if acc >= 1 else []
        if acc + 1 <= MAX_VALUE:
            choices.append("+")
        if acc * 2 <= MAX_VALUE:
            choices.append("*")
        op = rng.choice(choices)
        if op == "+":
            b = rng.randint(1, min(99, MAX_VALUE - acc))
        elif op == "-":
            b = rng.randint(1, min(99, acc))
        else:
            b = rng.randint(2, min(9, MAX_VALUE // acc) if acc else 9)
        acc = apply(acc, op, b)
        operands.append(b)
        ops.append(op)
    return Problem(tuple(operands), tuple(ops))


def split_range(split: str) -> tuple[int, int]:
    if split == "all":
        return ALL_OPS
    if split not in SPLITS:
        raise SteerableError(f"unknown split {split!r}: use one of easy, medium, hard, all")
    return SPLITS[split]


def eval_problems(split: str, n: int, seed: int = 0) -> list[Problem]:
    """``n`` held-out problems of a split, the same for the same seed.

    Difficulties cycle through the split's range so every number of operations
    is equally represented.
    """
    lo, hi = split_range(split)
    rng = random.Random(f"eval-{split}-{seed}")
    out: list[Problem] = []
    seen: set[str] = set()
    while len(out) < n:
        p = sample_problem(rng, lo + len(out) % (hi - lo + 1))
        if p.held_out and p.prompt not in seen:
            seen.add(p.prompt)
            out.append(p)
    return out


def train_problem(rng: random.Random, lo: int = 1, hi: int = 8) -> Problem:
    """A random problem that is not held out for evaluation."""
    while True:
        p = sample_problem(rng, rng.randint(lo, hi))
        if not p.held_out:
            return p
