"""Data types shared by every generator backend."""

from __future__ import annotations

from dataclasses import dataclass, field

from steerable.config import check, opt
from steerable.errors import ConfigError
from steerable.usage import Usage

__all__ = ["Completion", "SamplingParams", "StepOutput", "Usage"]

#: The smallest non-zero temperature: logits / 1e-300 overflow to inf and sample garbage.
MIN_TEMPERATURE = 1e-3


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. Defaults are greedy-free plain sampling at temperature 1."""

    temperature: float = opt(1.0, "Sampling temperature; 0 for greedy.", ge=0)
    top_p: float = opt(1.0, "Nucleus mass kept; 1 disables.", gt=0, le=1)
    top_k: int = opt(0, "Keep the k most likely tokens; 0 disables.", ge=0)
    max_new_tokens: int = opt(128, "Tokens to generate at most.", ge=1)
    n: int = opt(1, "Samples per prompt.", ge=1)
    stop: tuple[str, ...] = opt(
        (), "Stop string, excluded from the text (repeatable; escapes such as \\n understood).", sep=None, min_len=1
    )
    # seeds each row's own torch.Generator; None draws from torch's global RNG
    seed: int | None = opt(None, "Seed for sampling.", ge=0, lt=2**63)
    ignore_eos: bool = opt(False, "Keep going past EOS (for benchmarks, as vLLM's ignore_eos).")

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        check(self)
        if 0 < self.temperature < MIN_TEMPERATURE:
            raise ConfigError(
                f"temperature must be 0 (greedy) or >= {MIN_TEMPERATURE} (got {self.temperature}): "
                "smaller ones overflow the logits"
            )

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
