"""The language-model process: a step is the text up to a delimiter, over any step generator.

One process for every backend: it stands on the
:class:`~steerable.lm.base.StepGenerator` protocol, which the local
transformers generator (batched steps through a forkable KV cache) and the
HTTP generator (a request per step, or one per step for all rows on our own
server) both implement. Its condition is the prompt (``Process[str]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from steerable.errors import ConfigError
from steerable.lm.base import Rows, StepGenerator
from steerable.lm.types import SamplingParams
from steerable.search.process import Completes, Forces, StepCapped
from steerable.usage import Usage


@dataclass
class LMState:
    seqs: Rows
    prompt: str
    steps: list[int] = field(default_factory=list)  # steps taken per row
    capped: list[bool] = field(default_factory=list)  # row ran into max_steps / max_tokens / the token budget


@dataclass
class LMProcess(Forces, StepCapped, Completes):
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

    generator: StepGenerator
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

    # -- cost and the run's token budget ------------------------------------------------------------------

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

    # -- the Process interface ----------------------------------------------------------------------------

    def init(self, cond: str, n: int, seed: int | None = None) -> LMState:
        seqs = self.generator.start([cond], n=n)
        if seed is not None and not self.params.greedy:
            seqs.seed(seed)
        return LMState(seqs, cond, [0] * n, [False] * n)

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
            if state.steps[r] >= self.max_steps or self.generator.generated_tokens(state.seqs, r) >= self.max_tokens:
                state.capped[r] = True

    def complete(self, state: LMState) -> LMState:
        """Every live row to its end (what ``run_to_end`` uses for strategies that need only finished samples).

        On a local generator a step costs no round trip, so rows step as any strategy steps them. On a remote
        one they run in chunks of ``max_step_tokens`` ignoring the delimiter: a few requests per row instead of
        one per line (one per chunk for all rows on our server). A chunk is not a step: ``max_steps`` does not
        cap a row there, ``max_tokens`` does.
        """
        if not self.generator.remote:
            while not all(self.is_terminal(state)):
                self.propose(state)
            return state
        gen = self.generator
        while True:
            live = [r for r, t in enumerate(self.is_terminal(state)) if not t]
            if not live:
                return state
            room = min(self.max_tokens - gen.generated_tokens(state.seqs, r) for r in live)
            cap = self._share(min(self.max_step_tokens, max(1, room)), live, state.capped)
            if cap == 0:
                return state
            gen.step(state.seqs, self.params, stop=(), max_tokens=cap, rows=live)
            for r in live:
                if state.seqs.finished[r]:
                    state.steps[r] += 1
                elif gen.generated_tokens(state.seqs, r) >= self.max_tokens:
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
            self.generator.concat([s.seqs for s in states]),
            states[0].prompt,
            [x for s in states for x in s.steps],
            [x for s in states for x in s.capped],
        )

    def preview(self, state: LMState) -> list[str]:
        return self.generator.texts(state.seqs)
