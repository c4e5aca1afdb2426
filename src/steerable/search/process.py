"""The contract: a process produces samples step by step, conditioned on a ``C``; strategies decide which rows live on.

A language model appends a reasoning step; a diffusion sampler takes one
denoising step; a control policy one action chunk. Strategies only see this
interface, so a new model family is a new :class:`Process`, not a new
strategy.

The process is generic in its **condition** ``C``: what a run is conditioned
on, passed to :meth:`Process.init` and, for every sample, to the scorer
(:class:`~steerable.reward.scorer.Scorer`). A language model's is a prompt
(``str``); the digits denoiser's a target written as a string; a control
policy's a :class:`~steerable.control.steering.process.Root` (a fork of the
episode's env, the observations seen, the actions executed); an agent's a
prompt plus the environment it acts in. A strategy passes the condition it was
given and never looks inside it, so nothing carries a condition around the
contract (no setter before a search, no patched encoder, no per-episode
attribute).

Cost is what the process's :attr:`Process.usage` counted: a strategy's cost is
the difference between two readings (:class:`~steerable.search.base.Meter`).

This module holds only protocols; the processes are
:class:`~steerable.search.lm_process.LMProcess` (any
:class:`~steerable.lm.base.StepGenerator`: the local transformers generator or
an OpenAI-compatible server), :class:`~steerable.diffusion.process.DiffusionProcess`
and :class:`~steerable.control.steering.process.ControlProcess`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from steerable.usage import Usage

Sample = Any  # one row of what ``preview`` returns: text, a tensor row, a plan
C = TypeVar("C")  # a run's condition: a prompt, a target, an episode's root, a prompt and its environment
C_contra = TypeVar("C_contra", contravariant=True)


@runtime_checkable
class Process(Protocol[C_contra]):
    """Rows of a state are particles (beams, samples); every call works on the whole batch."""

    def init(self, cond: C_contra, n: int, seed: int | None = None) -> Any:
        """``n`` fresh rows conditioned on ``cond``; ``seed`` fixes every draw of the run (None: a random one)."""

    def propose(self, state: Any) -> None:
        """Extend every live row by one step."""

    def select(self, state: Any, rows: Sequence[int]) -> Any:
        """A new state of ``rows`` (repeats fork); ``state`` stays valid."""

    def concat(self, states: Sequence[Any]) -> Any:
        """One state of every row of ``states`` (all started from one condition), in order."""

    def preview(self, state: Any) -> Sequence[Sample]:
        """The sample so far of each row, one per row, for scorers and answer extraction.

        ``list[str]`` for a language model; a diffusion process returns a tensor
        ``[rows, ...]`` (its x0-predictions), which is itself a sequence of rows.
        """

    def is_terminal(self, state: Any) -> list[bool]: ...

    def start_run(self) -> None:
        """A strategy's run begins: a per-run budget (tokens, denoising steps, ...) starts from zero."""

    def size(self, state: Any) -> int: ...

    @property
    def usage(self) -> Usage:
        """What the process has spent so far, cumulative (a strategy's cost is the difference)."""


# Optional capabilities. A process declares one by subclassing it; strategies check with ``isinstance``.


@runtime_checkable
class Completes(Protocol):
    """Can run every live row to its end in one go (a remote process saves a round trip per step)."""

    def complete(self, state: Any) -> Any: ...


@runtime_checkable
class Forces(Protocol):
    """Can hold rows back from a step and make a row take a given step (conditional SMC's reference)."""

    def propose(self, state: Any, skip: Sequence[int] = ()) -> None: ...

    def force(self, state: Any, row: int, step: Sample, final: bool = False) -> None: ...


@runtime_checkable
class StepCapped(Protocol):
    """Ends every row after at most ``max_steps`` steps (ePF's t_max, a schedule's length)."""

    max_steps: int


@runtime_checkable
class TokenBudgeted(Protocol):
    """Caps the tokens a whole strategy run may generate; ``tokens_left`` is what this run may still generate
    (None: no token budget)."""

    @property
    def tokens_left(self) -> int | None: ...
