"""A process produces samples step by step; strategies decide which partial samples live on.

A language model appends a reasoning step; a diffusion sampler would take one
denoising step; a control policy one action chunk. Strategies only see this
interface, so a new model family is a new :class:`Process`, not a new strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from steerable.errors import ConfigError
from steerable.lm.local import LocalGenerator, Sequences
from steerable.lm.types import SamplingParams
from steerable.usage import Usage

Sample = Any  # one row of what ``preview`` returns: text, a tensor row, an action sequence


@runtime_checkable
class Process(Protocol):
    """Rows of a state are particles (beams, samples); every call works on the whole batch."""

    def init(self, prompt: str, n: int, seed: int | None = None) -> Any:
        """``n`` fresh rows conditioned on ``prompt`` (a text prompt; a target class written as a string)."""

    def propose(self, state: Any) -> None:
        """Extend every live row by one step."""

    def select(self, state: Any, rows: Sequence[int]) -> Any:
        """A new state of ``rows`` (repeats fork); ``state`` stays valid."""

    def concat(self, states: Sequence[Any]) -> Any: ...

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


class TokenBudgeted:
    """What language-model processes share: usage from their generator and a per-run token budget.

    A capability too: ``isinstance(process, TokenBudgeted)`` says ``tokens_left`` is there to read.
    """

    generator: Any
    token_budget: int | None
    _run_origin: int = 0

    @property
    def usage(self) -> Usage:
        return self.generator.usage

    def start_run(self) -> None:
        self._run_origin = self.usage.generated_tokens

    @property
    def tokens_left(self) -> int | None:
        """Tokens this run may still generate (None: no token budget)."""
        if self.token_budget is None:
            return None
        return max(0, self.token_budget - (self.usage.generated_tokens - self._run_origin))

    def _share(self, cap: int, live: list[int], capped: list[bool]) -> int:
        """A step's token cap with the budget left shared among the live rows; 0 ends them (marked capped)."""
        left = self.tokens_left
        if left is None:
            return cap
        cap = min(cap, left // len(live))
        if cap == 0:
            for r in live:
                capped[r] = True
        return cap


@dataclass
class LMState:
    seqs: Sequences
    prompt: str
    steps: list[int] = field(default_factory=list)  # steps taken per row
    capped: list[bool] = field(default_factory=list)  # row ran into max_steps / max_tokens


@dataclass
class LMProcess(TokenBudgeted, Forces, StepCapped):
    """Language-model process: a step is the text up to ``delimiter`` (or ``max_step_tokens`` tokens).

    ``delimiter`` is ``"\\n"`` for the built-in world, ``"\\n\\n"`` for chat
    models by default. ``step_tokens`` (if set) makes every step a fixed
    number of tokens instead. ``max_step_tokens`` caps a step so a missing
    delimiter cannot run away; ``max_steps`` and ``max_tokens`` cap a sample.

    ``token_budget`` caps the tokens a whole strategy run may generate, over
    all rows: a step is cut to what is left shared among the live rows, and
    when nothing is left every live row ends unfinished (it has no answer, so
    it loses to any finished one). The cap is exact: a run never generates more.
    """

    generator: LocalGenerator
    delimiter: str = "\n\n"
    params: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.8))
    step_tokens: int | None = None
    max_step_tokens: int = 256
    max_steps: int = 40
    max_tokens: int = 2048
    token_budget: int | None = None

    def __post_init__(self) -> None:
        self._run_origin = 0
        if not self.delimiter and self.step_tokens is None:
            raise ConfigError("an LM process needs a non-empty delimiter or step_tokens")
        if self.max_step_tokens < 1 or self.max_steps < 1 or self.max_tokens < 1:
            raise ConfigError("max_step_tokens, max_steps and max_tokens must be >= 1")
        if self.token_budget is not None and self.token_budget < 1:
            raise ConfigError(f"token_budget must be >= 1 (got {self.token_budget})")

    def init(self, prompt: str, n: int, seed: int | None = None) -> LMState:
        seqs = self.generator.start([prompt], n=n)
        if seed is not None and not self.params.greedy:
            seqs.seed(seed)
        return LMState(seqs, prompt, [0] * n, [False] * n)

    def size(self, state: LMState) -> int:
        return len(state.seqs)

    def is_terminal(self, state: LMState) -> list[bool]:
        return [f or c for f, c in zip(state.seqs.finished, state.capped, strict=True)]

    def propose(self, state: LMState, skip: Sequence[int] = ()) -> None:
        """One step for every live row except those in ``skip``."""
        live = [r for r, t in enumerate(self.is_terminal(state)) if not t and r not in skip]
        if not live:
            return
        cap = self._share(self.step_tokens or self.max_step_tokens, live, state.capped)
        if cap == 0:  # the run's token budget is spent: live rows end where they are
            return
        stop = () if self.step_tokens else (self.delimiter,)
        self.generator.step(state.seqs, self.params, stop=stop, max_tokens=cap, rows=live)
        for r in live:
            state.steps[r] += 1
            n_gen = len(state.seqs.generated(r))
            if state.steps[r] >= self.max_steps or n_gen >= self.max_tokens:
                state.capped[r] = True

    def force(self, state: LMState, row: int, step: str, final: bool = False) -> None:
        """Make ``row`` take ``step`` as its next step (a reference trajectory); ``final`` ends the row."""
        self.generator.append(state.seqs, [step if r == row else "" for r in range(len(state.seqs))])
        state.steps[row] += 1
        if final:
            state.capped[row] = True

    def select(self, state: LMState, rows: Sequence[int]) -> LMState:
        rows = list(rows)
        return LMState(
            state.seqs.select(rows), state.prompt, [state.steps[r] for r in rows], [state.capped[r] for r in rows]
        )

    def concat(self, states: Sequence[LMState]) -> LMState:
        return LMState(
            Sequences.concat([s.seqs for s in states]),
            states[0].prompt,
            [x for s in states for x in s.steps],
            [x for s in states for x in s.capped],
        )

    def preview(self, state: LMState) -> list[str]:
        tok = self.generator.tokenizer
        return [tok.decode(state.seqs.generated(r), skip_special_tokens=True) for r in range(len(state.seqs))]
