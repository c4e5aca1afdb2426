"""Contrastive prompt sets of the built-in world, for extracting steering vectors.

- ``refusal``: harmful requests (positive) against benign ones (negative),
  plain and never a held-out combination, so evaluation on held-out and
  jailbreak-wrapped requests measures generalisation.
- ``efficiency``: the same training problems with the first two lines of a
  concise solution (positive) and of a verbose one (negative: its second line
  is the ``check`` line); read at the end, the difference is the
  concise-minus-verbose style direction.
"""

from __future__ import annotations

import random

from steerable.errors import InputError
from steerable.tasks.builtin import arithmetic, requests

SETS = ("refusal", "efficiency")


def contrast_set(name: str, n: int = 128, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(positives, negatives)``; for ``efficiency`` they are pairs (same problem, row by row)."""
    if name == "refusal":
        plain = [r for r in requests.all_requests() if not r.jailbreak and not r.held_out]
        return [r.prompt for r in plain if r.harmful], [r.prompt for r in plain if not r.harmful]
    if name == "efficiency":
        rng = random.Random(seed)
        problems = [arithmetic.train_problem(rng, *arithmetic.ALL_OPS) for _ in range(n)]
        head = lambda p, style: "".join(line + "\n" for line in p.solution(style).split("\n")[:2])  # noqa: E731
        return [p.prompt + head(p, "concise") for p in problems], [p.prompt + head(p, "verbose") for p in problems]
    raise InputError(f"unknown built-in prompt set {name!r}: use one of {', '.join(SETS)}")


def capability_texts(n: int = 32, seed: int = 1) -> list[str]:
    """Worked arithmetic solutions (both styles) whose next-token distributions steering should leave alone."""
    rng = random.Random(seed)
    problems = [arithmetic.train_problem(rng, *arithmetic.ALL_OPS) for _ in range(n)]
    return [p.prompt + p.solution("concise" if i % 2 else "verbose") for i, p in enumerate(problems)]
