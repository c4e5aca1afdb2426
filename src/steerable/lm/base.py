"""The generator protocols every backend implements (local transformers, HTTP): whole completions, and steps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from steerable.lm.types import Completion, SamplingParams, StepOutput
from steerable.usage import Usage

Prompt = str | list[dict[str, str]]  # raw text, or chat messages


@runtime_checkable
class Generator(Protocol):
    """Samples completions; ``n`` per prompt, in prompt order."""

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]: ...


@runtime_checkable
class Rows(Protocol):
    """Partial samples of one prompt that a step-wise process carries: forkable, joinable, each on its own seed.

    :class:`~steerable.lm.sequences.Sequences` (local, with its KV cache) and
    :class:`~steerable.lm.http.HTTPRows` (text kept client-side) are the two.
    """

    finished: list[bool]  # ended by EOS

    def __len__(self) -> int: ...

    def seed(self, seed: int) -> None:
        """Give every row its own random stream derived from ``seed``."""

    def select(self, rows: Sequence[int]) -> Rows:
        """A new batch of ``rows`` (repeats fork: a row's first copy continues its stream, later ones branch)."""


@runtime_checkable
class StepGenerator(Protocol):
    """A generator that continues rows step by step: what :class:`~steerable.search.lm_process.LMProcess` stands
    on, so one process serves the local model and an OpenAI-compatible server alike.

    ``remote`` says that every ``step`` call is a round trip (a process then runs rows to their end in chunks
    rather than step by step when a strategy only needs finished samples).
    """

    remote: bool

    @property
    def usage(self) -> Usage: ...

    def start(self, prompts: Sequence[Prompt], n: int = 1) -> Rows:
        """``n`` rows per prompt, prompt-major."""

    def step(
        self,
        seqs: Rows,
        params: SamplingParams,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        rows: Sequence[int] | None = None,
    ) -> StepOutput:
        """Extend the unfinished rows of ``seqs`` (those of ``rows`` only, if given) to a stop string, EOS or
        ``max_tokens``."""

    def append(self, seqs: Rows, texts: Sequence[str]) -> None:
        """Append fixed text to each row (``""`` leaves a row alone)."""

    def concat(self, batches: Sequence[Rows]) -> Rows:
        """One batch of every row of ``batches``, in order."""

    def texts(self, seqs: Rows) -> list[str]:
        """Each row's generated text (the prompt excluded)."""

    def generated_tokens(self, seqs: Rows, row: int) -> int:
        """Tokens ``row`` has generated so far."""
