"""What a model spent: one counter type for every family (language models, diffusion, control).

Every process reports its spend as a :class:`Usage` (cumulative over its life);
a strategy's :class:`~steerable.search.base.Meter` turns the difference
between two readings into a :class:`~steerable.search.result.Cost`. A family
fills the counters that mean something for it and leaves the others at 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """Counters of model work.

    Language models: ``forward_tokens`` counts real tokens run through the
    model (prompt prefill plus every sampled token fed back); padding slots are
    not tokens and are not counted, ``padding_slots`` reports them separately,
    so wasted compute stays visible. Diffusion: ``nfe`` counts denoiser
    evaluations per row (a classifier-free-guidance step runs 2 rows and counts
    2), ``decoder_calls`` VAE decodes of a sample. Control and agents:
    ``env_steps``; agents also ``tool_calls`` (the env steps that called a
    tool) and ``appended_tokens`` (tokens written into a row's context rather
    than sampled: an environment's observations), counted apart from
    ``generated_tokens``.
    """

    prompt_tokens: int = 0
    generated_tokens: int = 0
    forward_tokens: int = 0
    padding_slots: int = 0
    nfe: int = 0
    decoder_calls: int = 0
    env_steps: int = 0
    tool_calls: int = 0
    appended_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f) + getattr(other, f) for f in _FIELDS))

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f) - getattr(other, f) for f in _FIELDS))


_FIELDS = tuple(f.name for f in dataclasses.fields(Usage))
