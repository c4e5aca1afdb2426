"""What a strategy returns: the choice, every candidate, and what it cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cost:
    """What one strategy run spent. Each family fills its own model counters and leaves the others at 0."""

    generated_tokens: int = 0  # language models: tokens sampled
    forward_tokens: int = 0  # language models: tokens run through the model (prefill included)
    scorer_calls: int = 0
    scorer_tokens: int = 0  # tokens the scorer's own model ran (0 for scorers without one)
    seconds: float = 0.0
    nfe: int = 0  # diffusion: denoiser evaluations per row (a classifier-free-guidance step counts its 2 rows)
    decoder_calls: int = 0  # diffusion: VAE decodes
    env_steps: int = 0  # control and agents: environment steps
    tool_calls: int = 0  # agents: the environment steps that called a tool
    env_tokens: int = 0  # agents: tokens an environment wrote into the context (not generated)


def _text_of(sample: Any) -> str | None:
    return sample if isinstance(sample, str) else None


@dataclass(frozen=True)
class Candidate:
    sample: Any  # text for a language model, a tensor for diffusion, an action sequence for control
    answer: str | None  # extracted answer, None when none could be found
    score: float  # the scorer's (aggregated) score, nan when not scored
    weight: float = 0.0  # the strategy's final weight (vote share, resampling weight, ...)
    text: str | None = None  # the sample's text where it has one (the sample itself for a language model)

    def __post_init__(self) -> None:
        if self.text is None:
            object.__setattr__(self, "text", _text_of(self.sample))


@dataclass(frozen=True)
class Result:
    method: str
    budget: int
    sample: Any  # the chosen sample
    answer: str | None
    candidates: tuple[Candidate, ...]
    cost: Cost
    info: dict = field(default_factory=dict)  # strategy-specific diagnostics (ESS, temperatures, ...)
    text: str | None = None  # the chosen sample's text where it has one

    def __post_init__(self) -> None:
        if self.text is None:
            object.__setattr__(self, "text", _text_of(self.sample))
