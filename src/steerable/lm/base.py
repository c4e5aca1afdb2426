"""The generator protocol that every backend implements (local transformers, HTTP, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from steerable.lm.types import Completion, SamplingParams

Prompt = str | list[dict[str, str]]  # raw text, or chat messages


@runtime_checkable
class Generator(Protocol):
    """Samples completions; ``n`` per prompt, in prompt order."""

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]: ...
