"""What a strategy returns: the choice, every candidate, and what it cost."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cost:
    generated_tokens: int = 0
    forward_tokens: int = 0
    scorer_calls: int = 0
    scorer_tokens: int = 0  # tokens the scorer's own model ran (0 for scorers without one)
    seconds: float = 0.0


@dataclass(frozen=True)
class Candidate:
    text: str
    answer: str | None  # extracted answer, None when none could be found
    score: float  # the scorer's (aggregated) score, nan when not scored
    weight: float = 0.0  # the strategy's final weight (vote share, resampling weight, ...)


@dataclass(frozen=True)
class Result:
    method: str
    budget: int
    text: str  # the chosen sample
    answer: str | None
    candidates: tuple[Candidate, ...]
    cost: Cost
    info: dict = field(default_factory=dict)  # strategy-specific diagnostics (ESS, temperatures, ...)
