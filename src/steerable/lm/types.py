"""Data types shared by every generator backend."""

from __future__ import annotations

from dataclasses import dataclass, field

from steerable.errors import ConfigError
from steerable.usage import Usage

__all__ = ["Completion", "SamplingParams", "StepOutput", "Usage"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. Defaults are greedy-free plain sampling at temperature 1."""

    temperature: float = 1.0  # 0 means greedy (argmax)
    top_p: float = 1.0  # nucleus mass kept, in (0, 1]
    top_k: int = 0  # keep the k most likely tokens; 0 disables
    max_new_tokens: int = 128
    n: int = 1  # samples per prompt
    stop: tuple[str, ...] = ()  # stop strings; generation ends at the first one (excluded from text)
    seed: int | None = None  # seeds each row's own torch.Generator; None draws from torch's global RNG
    ignore_eos: bool = False  # keep going past EOS (for benchmarks, as vLLM's ignore_eos)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (got {self.temperature}); use 0 for greedy decoding")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1] (got {self.top_p}); use 1 to disable nucleus sampling")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (got {self.top_k}); use 0 to disable")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1 (got {self.max_new_tokens})")
        if self.n < 1:
            raise ConfigError(f"n must be >= 1 (got {self.n})")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        if any(not s for s in self.stop):
            raise ConfigError("stop strings must be non-empty (got ''); drop the empty one")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Completion:
    """One sampled continuation of one prompt."""

    prompt_index: int
    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]  # log p(token) under the model's unscaled distribution
    finish_reason: str  # "stop" (stop string or EOS) or "length"
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class StepOutput:
    """What one ``step`` call added to each row of a batch of sequences."""

    texts: tuple[str, ...]  # the new text of each row, stop string included
    token_ids: tuple[tuple[int, ...], ...]
    logprobs: tuple[tuple[float, ...], ...]
    finish_reasons: tuple[str | None, ...]  # "stop", "eos", "length" (step cap) or None (row already finished)
    usage: Usage
    # with step(top=k): the k most likely (token id, logprob) at each new token of each row; else ()
    top_logprobs: tuple[tuple[tuple[tuple[int, float], ...], ...], ...] = ()
