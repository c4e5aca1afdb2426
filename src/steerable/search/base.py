"""Shared plumbing of strategies: running a process to the end, answers, cost."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from steerable.reward.scorer import Scorer
from steerable.search.process import Process
from steerable.search.result import Cost

Extract = Callable[[str], str | None]


def builtin_extract(text: str) -> str | None:
    from steerable.tasks.builtin.verifier import extract_answer

    a = extract_answer(text)
    return None if a is None else str(a)


def require(budget: int, scorer: Scorer | None, name: str, min_budget: int = 1) -> None:
    """The checks every strategy makes before spending anything."""
    from steerable.errors import ConfigError

    if budget < min_budget:
        raise ConfigError(f"{name}: budget must be >= {min_budget} (got {budget})")
    if scorer is None:
        raise ConfigError(f"{name} needs a scorer: pass --scorer builtin-prm (or another)")


def run_to_end(process: Process, state):
    """Propose until every row is terminal (in one go where the process can: a remote one saves round trips)."""
    if hasattr(process, "complete"):
        return process.complete(state)
    while not all(process.is_terminal(state)):
        process.propose(state)
    return state


def logit(p: float, eps: float = 1e-6) -> float:
    p = min(max(p, eps), 1 - eps)
    return math.log(p) - math.log1p(-p)


@dataclass
class Meter:
    """Measures what a strategy spends between ``start`` and ``cost``."""

    process: Process
    scorer: Scorer | None
    new_run: bool = True  # False for a strategy run inside another (its budget is the outer run's)

    def __post_init__(self) -> None:
        if self.new_run and hasattr(self.process, "start_run"):
            self.process.start_run()
        self.t0 = time.perf_counter()
        self.u0 = self.process.usage
        self.c0 = self.scorer.calls if self.scorer is not None else 0
        self.s0 = getattr(self.scorer, "forward_tokens", 0)

    def cost(self) -> Cost:
        u = self.process.usage - self.u0
        calls = (self.scorer.calls - self.c0) if self.scorer is not None else 0
        tokens = getattr(self.scorer, "forward_tokens", 0) - self.s0
        return Cost(u.generated_tokens, u.forward_tokens, calls, tokens, round(time.perf_counter() - self.t0, 4))
