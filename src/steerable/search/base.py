"""The strategy contract and the plumbing every strategy shares: checks, running to the end, cost."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from steerable.errors import ConfigError
from steerable.reward.scorer import Scorer, check_scorer
from steerable.search.process import C, Completes, Process, Sample
from steerable.search.result import Cost, Result

Extract = Callable[[Sample], str | None]  # a sample's answer (None: none found); the task's, passed in by the registry


def no_answer(sample: Sample) -> None:
    """The extractor of a strategy built without one: samples carry no answer."""
    return None


@runtime_checkable
class Strategy(Protocol):
    """Decides which partial samples to extend, copy or drop under a budget (its meaning: ``registry``'s table)."""

    name: str
    extract: Extract

    def run(
        self, process: Process[C], scorer: Scorer[C] | None, budget: int, cond: C, seed: int | None = None
    ) -> Result:
        """Spend at most ``budget`` (its meaning: the registry's table) on samples of ``process`` conditioned on
        ``cond``, scored by ``scorer`` given ``cond``; ``seed`` fixes every draw."""


def require(budget: int, scorer: Scorer | None, name: str, min_budget: int = 1, unit_range: bool = False) -> None:
    """The checks every strategy makes before spending anything.

    ``unit_range``: the strategy reads scores as probabilities (logit weights), so the scorer's range must lie
    in [0, 1].
    """
    if budget < min_budget:
        raise ConfigError(f"{name}: budget must be >= {min_budget} (got {budget})")
    if scorer is None:
        raise ConfigError(f"{name} needs a scorer: pass --scorer builtin-prm (or another)")
    check_scorer(scorer, name)
    lo, hi = scorer.range
    if unit_range and not (lo >= 0.0 and hi <= 1.0):
        raise ConfigError(
            f"{name} weighs particles by logit(score), so it needs scores in [0, 1]; "
            f"{type(scorer).__name__} declares [{lo}, {hi}]: use a scorer with probabilities"
        )


def run_to_end(process: Process, state):
    """Propose until every row is terminal (in one go where the process can: a remote one saves round trips)."""
    if isinstance(process, Completes):
        return process.complete(state)
    while not all(process.is_terminal(state)):
        process.propose(state)
    return state


def logit(p: float, eps: float = 1e-6) -> float:
    p = min(max(p, eps), 1 - eps)
    return math.log(p) - math.log1p(-p)


@dataclass
class Meter:
    """Measures what a strategy spends between its creation and ``cost``."""

    process: Process
    scorer: Scorer | None
    new_run: bool = True  # False for a strategy run inside another (its budget is the outer run's)

    def __post_init__(self) -> None:
        if self.new_run:
            self.process.start_run()
        self.t0 = time.perf_counter()
        self.u0 = self.process.usage
        self.c0 = self.scorer.calls if self.scorer is not None else 0
        self.s0 = self.scorer.forward_tokens if self.scorer is not None else 0

    def cost(self) -> Cost:
        u = self.process.usage - self.u0
        calls = (self.scorer.calls - self.c0) if self.scorer is not None else 0
        tokens = (self.scorer.forward_tokens - self.s0) if self.scorer is not None else 0
        return Cost(
            generated_tokens=u.generated_tokens,
            forward_tokens=u.forward_tokens,
            scorer_calls=calls,
            scorer_tokens=tokens,
            seconds=round(time.perf_counter() - self.t0, 4),
            nfe=u.nfe,
            decoder_calls=u.decoder_calls,
            env_steps=u.env_steps,
            tool_calls=u.tool_calls,
            env_tokens=u.appended_tokens,
        )
