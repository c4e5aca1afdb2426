"""Scorers say how good a (partial) sample looks; higher is better.

Every scorer declares the ``range`` of its scores; strategies check what they
get, so a NaN or an out-of-range value is a clear error, not a silent wrong
weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from steerable.errors import SteerableError


class ScorerError(SteerableError):
    """A scorer returned something unusable."""


class Scorer(Protocol):
    range: tuple[float, float]
    calls: int

    def score(self, prompts: Sequence[str], partials: Sequence[str]) -> list[float]: ...


def checked_scores(scorer: Scorer, prompts: Sequence[str], partials: Sequence[str]) -> list[float]:
    """``scorer.score`` with NaN and range checks."""
    out = scorer.score(prompts, partials)
    if len(out) != len(partials):
        raise ScorerError(f"{type(scorer).__name__} returned {len(out)} scores for {len(partials)} samples")
    lo, hi = scorer.range
    for s in out:
        if math.isnan(s) or not lo <= s <= hi:
            raise ScorerError(f"{type(scorer).__name__} returned {s}, outside its range [{lo}, {hi}]")
    return list(out)
