"""Contrastive prompt sets of the built-in world, for extracting steering vectors.

- ``refusal``: harmful requests (positive) against benign ones (negative),
  plain and never a held-out combination, so evaluation on held-out and
  jailbreak-wrapped requests measures generalisation.
- ``jailbreak``: harmful requests in any wrapper (positive) against benign
  ones in any wrapper and arithmetic problems (negative), never a held-out
  combination: what a controller learns to tell apart. The arithmetic
  prompts teach it to leave the model's other work alone (trained on requests
  only, it steers arithmetic prompts too, which costs accuracy).
- ``efficiency``: the same training problems (two or more operations) cut
  just after their second operation line: concise (positive, about to write
  the third operation) and verbose (negative, the same text with the first
  ``check`` line in it, about to write the second one). Both end on an
  operation line, so the difference is the style the model is in, not which
  kind of line it just wrote.
"""

from __future__ import annotations

import random

from steerable.errors import InputError
from steerable.tasks.builtin import arithmetic, requests

SETS = ("refusal", "jailbreak", "efficiency")


def contrast_set(name: str, n: int = 128, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(positives, negatives)``; for ``efficiency`` they are pairs (same problem, row by row)."""
    if name == "refusal":
        plain = [r for r in requests.all_requests() if not r.jailbreak and not r.held_out]
        return [r.prompt for r in plain if r.harmful], [r.prompt for r in plain if not r.harmful]
    if name == "jailbreak":
        seen = [r for r in requests.all_requests() if not r.held_out]
        rng = random.Random(seed)
        maths = [arithmetic.train_problem(rng, *arithmetic.ALL_OPS).prompt for _ in range(n)]
        return [r.prompt for r in seen if r.harmful], [r.prompt for r in seen if not r.harmful] + maths
    if name == "efficiency":
        rng = random.Random(seed)
        problems = [arithmetic.train_problem(rng, 2, arithmetic.ALL_OPS[1]) for _ in range(n)]
        head = lambda p, style, k: "".join(line + "\n" for line in p.solution(style).split("\n")[:k])  # noqa: E731
        return [p.prompt + head(p, "concise", 2) for p in problems], [
            p.prompt + head(p, "verbose", 3) for p in problems
        ]
    raise InputError(f"unknown built-in prompt set {name!r}: use one of {', '.join(SETS)}")


def capability_texts(n: int = 32, seed: int = 1) -> list[str]:
    """Worked arithmetic solutions (both styles) whose next-token distributions steering should leave alone."""
    rng = random.Random(seed)
    problems = [arithmetic.train_problem(rng, *arithmetic.ALL_OPS) for _ in range(n)]
    return [p.prompt + p.solution("concise" if i % 2 else "verbose") for i, p in enumerate(problems)]
