"""Scorers say how good a (partial) sample looks; higher is better.

A sample is whatever a process previews: text for a language model, a tensor
for diffusion (an x0-prediction or a decoded image), a plan for control.
``conds`` are the conditions the samples were drawn for, one per sample: the
``C`` of the process (a text prompt, a target class written as a string, a
control episode's root, ...), so a scorer reads what it needs from them and
nothing is set on it before a search.

Every scorer declares the ``range`` of its scores, any real interval (a
process reward model's (0, 1), a log-probability's (-inf, 0)); strategies
check what they get, so a NaN or an out-of-range value is a clear error, not a
silent wrong weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from steerable.errors import ConfigError, SteerableError

C_contra = TypeVar("C_contra", contravariant=True)  # the condition of the process whose samples it scores


class ScorerError(SteerableError):
    """A scorer returned something unusable."""


@runtime_checkable
class Scorer(Protocol[C_contra]):
    range: tuple[float, float]  # (lo, hi), lo < hi; either end may be infinite
    calls: int  # model (or score) calls so far
    forward_tokens: int  # tokens its own model ran so far (0 for a scorer without a model)

    def score(self, conds: Sequence[C_contra], samples: Sequence[Any]) -> list[float]:
        """One score per sample, ``conds[i]`` the condition ``samples[i]`` was drawn for."""


@runtime_checkable
class CachedScorer(Scorer, Protocol):
    """A scorer that keeps state between calls (e.g. cached prefixes), which a fair benchmark resets per run."""

    def clear_cache(self) -> None: ...


def check_scorer(scorer: object, where: str) -> None:
    """A clear error for an object that is not a :class:`Scorer` or declares an unusable range."""
    if not isinstance(scorer, Scorer):
        missing = [a for a in ("range", "calls", "forward_tokens", "score") if not hasattr(scorer, a)]
        raise ConfigError(f"{where}: {type(scorer).__name__} is not a scorer (it lacks {', '.join(missing)})")
    lo, hi = scorer.range
    if math.isnan(lo) or math.isnan(hi) or not lo < hi:
        raise ConfigError(f"{where}: {type(scorer).__name__} declares range {scorer.range}: it needs lo < hi")


def checked_scores(scorer: Scorer, conds: Sequence[Any], samples: Sequence[Any]) -> list[float]:
    """``scorer.score`` with NaN and range checks."""
    out = scorer.score(conds, samples)
    if len(out) != len(samples):
        raise ScorerError(f"{type(scorer).__name__} returned {len(out)} scores for {len(samples)} samples")
    lo, hi = scorer.range
    for s in out:
        if math.isnan(s) or not lo <= s <= hi:
            raise ScorerError(f"{type(scorer).__name__} returned {s}, outside its range [{lo}, {hi}]")
    return [float(s) for s in out]
