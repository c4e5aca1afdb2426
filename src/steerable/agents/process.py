"""The agent process: a language model acting in an environment, one turn per step.

Its condition is an :class:`Episode`: the environment, reset to its task, and
the prompt the model starts from (``Process[Episode]``). Every row acts in its
own copy of the environment. A **turn** is what the model writes up to its
next action (or the end): it generates up to a stop string (a line for the
built-in model), the :class:`Codec` reads the environment lines out of the new
text, the row's environment answers each one, and the observation is written
into the row's context. Rows fork with their environments: by
:meth:`~steerable.tasks.agent.envs.AgentEnv.clone` (default) or, as Koh et
al.'s tree search does, by resetting a fresh copy and replaying the row's
actions (``fork="replay"``, whose replayed steps are counted).

Cost: the generator's usage (sampled tokens, and the observation tokens
written into contexts as ``appended_tokens``, apart), plus the environment
steps every row took and how many of them were tool calls. All steps run in
copies: a strategy decides which trajectory it commits, and its real steps are
that trajectory's (:func:`real_steps`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from steerable.errors import ConfigError
from steerable.lm.base import Rows, StepGenerator
from steerable.lm.types import SamplingParams
from steerable.search.process import StepCapped
from steerable.tasks.agent.envs import AgentEnv, make_env, replay
from steerable.usage import Usage


class Codec(Protocol):
    """How a model's text maps to environment lines and observations back to text: the built-in model's lines
    (:class:`LineCodec`), or a chat model's tool calls through its chat template."""

    stop: tuple[str, ...]  # generation pauses at these to look for an action

    def prompt(self, env: AgentEnv, prompt_line: str) -> str:
        """The text the model starts from, given the environment's own prompt line."""

    def lines(self, text: str, final: bool) -> list[str]:
        """The environment lines in a new piece of model text (``final``: the model ended its turn with EOS)."""

    def observation(self, env: AgentEnv, line: str, text: str) -> str:
        """What is written into the context after the environment answered ``line`` with ``text``."""


@dataclass(frozen=True)
class LineCodec:
    """The built-in agent model's format: every line is an environment line, an observation is its own line."""

    stop: tuple[str, ...] = ("\n",)

    def prompt(self, env: AgentEnv, prompt_line: str) -> str:
        return prompt_line

    def lines(self, text: str, final: bool) -> list[str]:
        line = text.rstrip("\n").rsplit("\n", 1)[-1]
        return [line] if (text.endswith("\n") or final) and line.strip() else []

    def observation(self, env: AgentEnv, line: str, text: str) -> str:
        return text + "\n"


@dataclass(frozen=True, eq=False)
class Episode:
    """An agent run's condition: the environment reset to its task (never stepped: rows act in copies) and the
    prompt the model starts from."""

    env: AgentEnv
    prompt: str


def episode(task: Mapping[str, Any], tools: bool = True, codec: Codec | None = None) -> Episode:
    """The :class:`Episode` of a task object (``{"env": "lookup", ...}``: the format of the built-in splits)."""
    env = make_env(str(task.get("env", "")))
    line = env.reset(task, tools=tools)
    return Episode(env, (codec or LineCodec()).prompt(env, line))


@dataclass
class AgentState:
    seqs: Rows
    cond: Episode
    envs: list[AgentEnv]
    actions: list[list[str]]  # the environment lines each row has sent (what a replay fork re-sends)
    turns: list[int] = field(default_factory=list)
    capped: list[bool] = field(default_factory=list)


@dataclass
class AgentProcess(StepCapped):
    """Turns of a language model acting in an :class:`Episode`'s environment (a step is one turn).

    ``max_steps`` caps turns, ``max_turn_lines`` the stop-delimited pieces in
    one turn (reasoning lines before an action), ``max_tokens`` a row's
    tokens, its observations included. The environment's own cap on actions
    (``max_steps`` of the task) ends an episode that runs over.
    """

    generator: StepGenerator
    params: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=1.0))
    codec: Codec = field(default_factory=LineCodec)
    max_steps: int = 32
    max_turn_lines: int = 8
    max_piece_tokens: int = 64
    max_tokens: int = 768
    fork: Literal["clone", "replay"] = "clone"

    def __post_init__(self) -> None:
        if min(self.max_steps, self.max_turn_lines, self.max_piece_tokens, self.max_tokens) < 1:
            raise ConfigError("max_steps, max_turn_lines, max_piece_tokens and max_tokens must be >= 1")
        if self.fork not in ("clone", "replay"):
            raise ConfigError(f"fork must be 'clone' or 'replay' (got {self.fork!r})")
        self._env = Usage()

    @property
    def usage(self) -> Usage:
        return self.generator.usage + self._env

    def start_run(self) -> None: ...

    # -- the Process interface ----------------------------------------------------------------------------

    def init(self, cond: Episode, n: int, seed: int | None = None) -> AgentState:
        seqs = self.generator.start([cond.prompt], n=n)
        if seed is not None and not self.params.greedy:
            seqs.seed(seed)
        return AgentState(seqs, cond, [cond.env.clone() for _ in range(n)], [[] for _ in range(n)], [0] * n,
                          [False] * n)  # fmt: skip

    def size(self, state: AgentState) -> int:
        return len(state.seqs)

    def is_terminal(self, state: AgentState) -> list[bool]:
        return [e.done or f or c for e, f, c in zip(state.envs, state.seqs.finished, state.capped, strict=True)]

    def propose(self, state: AgentState, rows: Sequence[int] | None = None) -> None:
        """One turn for every live row (or the live rows of ``rows``: a strategy that decodes groups of rows
        apart, each under its own steering): pieces up to the codec's stop until an action was answered (or
        EOS, or ``max_turn_lines`` pieces)."""
        gen = self.generator
        ended = self.is_terminal(state)
        todo = started = [r for r in (range(len(ended)) if rows is None else rows) if not ended[r]]
        for _ in range(self.max_turn_lines):
            if not todo:
                break
            out = gen.step(state.seqs, self.params, stop=self.codec.stop, max_tokens=self.max_piece_tokens, rows=todo)
            appends = [""] * len(state.seqs)
            still = []
            for r in todo:
                acted = self._read(state, r, out.texts[r], appends)
                over = gen.generated_tokens(state.seqs, r) >= self.max_tokens
                if over:
                    state.capped[r] = True
                if not (acted or state.envs[r].done or state.seqs.finished[r] or over):
                    still.append(r)
            if any(appends):
                gen.append(state.seqs, appends)
            todo = still
        ended = self.is_terminal(state)
        for r in started:
            state.turns[r] += 1
            if state.turns[r] >= self.max_steps and not ended[r]:
                state.capped[r] = True

    def _read(self, state: AgentState, r: int, new: str, appends: list[str]) -> bool:
        """Feed a row's new text to its environment; True if an action was answered."""
        env, acted = state.envs[r], False
        for line in self.codec.lines(new, final=state.seqs.finished[r]):
            steps = env.steps
            obs = env.step(line)
            if obs is None:
                continue
            if env.steps > steps:
                state.actions[r].append(line)
                self._env = self._env + Usage(env_steps=1, tool_calls=int(env.tool))
            if obs.text:
                appends[r] += self.codec.observation(env, line, obs.text)
            acted = True
            if env.done:
                break
        return acted

    def select(self, state: AgentState, rows: Sequence[int]) -> AgentState:
        rows = list(rows)
        if self.fork == "clone":
            envs = [state.envs[r].clone() for r in rows]
        else:
            texts = self.generator.texts(state.seqs)
            envs = [self._replayed(state.cond, texts[r]) for r in rows]
        return AgentState(
            state.seqs.select(rows), state.cond, envs, [list(state.actions[r]) for r in rows],
            [state.turns[r] for r in rows], [state.capped[r] for r in rows],
        )  # fmt: skip

    def _replayed(self, cond: Episode, text: str) -> AgentEnv:
        """Koh et al.'s fork: a fresh copy of the episode's environment reading the row's lines again (its actions
        are sent again, and counted)."""
        env = replay(cond.env, text)
        self._env = self._env + Usage(env_steps=env.steps, tool_calls=env.steps * int(env.tool))
        return env

    def concat(self, states: Sequence[AgentState]) -> AgentState:
        return AgentState(
            self.generator.concat([s.seqs for s in states]), states[0].cond,
            [e for s in states for e in s.envs], [a for s in states for a in s.actions],
            [t for s in states for t in s.turns], [c for s in states for c in s.capped],
        )  # fmt: skip

    def preview(self, state: AgentState) -> list[str]:
        return self.generator.texts(state.seqs)

    def solved(self, state: AgentState) -> list[bool]:
        return [e.solved for e in state.envs]


def real_steps(cond: Episode, text: str) -> int:
    """The environment steps of the trajectory ``text``: what committing it costs in the real environment."""
    return replay(cond.env, text).steps


def answer_of(text: str) -> str | None:
    """A transcript's answer: what follows the last ``A:``, or ``goal`` for a maze walked to its goal."""
    if "= goal" in text:
        return "goal"
    found = [ln[2:].strip() for ln in text.split("\n") if ln.startswith("A:")]
    return found[-1] if found else None
