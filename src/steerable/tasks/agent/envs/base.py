"""What every environment of the agent world shares: observations, the line protocol, step counting and the
cap, answers, and the on-track oracle."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from steerable.errors import InputError

ANSWER = re.compile(r"^A:\s*(\S.*?)\s*$")
OUT_OF_STEPS = "= out of steps"


@dataclass(frozen=True)
class Observation:
    text: str  # written into the context as its own line ("" writes nothing)
    done: bool = False


class AgentEnv:
    """The interface and the shared bookkeeping: step counting, the cap, answers, the on-track oracle."""

    name: ClassVar[str]
    tool: ClassVar[bool] = True  # its actions are tool calls (a maze move is not)
    tools_header: ClassVar[str]  # what a prompt starts with when the tool is offered
    text_only: ClassVar[bool] = False  # whether a task can be posed without the tool (``--tools off``)

    def __init__(self) -> None:
        self.task: dict[str, Any] = {}
        self.steps = 0
        self.max_steps = 1
        self.done = False
        self.solved = False
        self.answered: str | None = None
        self.tools = True

    # -- the interface -----------------------------------------------------------------------------------

    def reset(self, task: Mapping[str, Any], tools: bool = True) -> str:
        """Start an episode of ``task``; returns its prompt (one line ending in a newline)."""
        if not tools and not self.text_only:
            raise InputError(f"the {self.name} environment has no text-only form: drop --tools off")
        self.task = self._check(dict(task))
        self.steps, self.done, self.solved, self.answered, self.tools = 0, False, False, None, tools
        self.max_steps = _positive_int(self.task.get("max_steps", self.default_max_steps()), "max_steps", 64)
        self._start()
        body = self.question()
        return f"{self.tools_header} {body}\n" if tools else f"{body}\n"

    def step(self, line: str) -> Observation | None:
        """Read one line of the model's text; an :class:`Observation` if it was an action, else None."""
        if self.done:
            return None
        line = line.strip()
        m = ANSWER.match(line)
        if m:
            self.answered, self.done = m.group(1), True
            self.solved = self.check_answer(m.group(1))
            return Observation("", done=True)
        if not self.tools or not self.is_action(line):
            self.read(line)
            return None
        if self.steps >= self.max_steps:
            self.done = True
            return Observation(OUT_OF_STEPS, done=True)
        self.steps += 1
        return self.act(line)

    def clone(self) -> AgentEnv:
        return copy.deepcopy(self)

    def progress(self) -> float:
        """The exact "on track" value, as Koh et al.'s value prompt scores a state: 1 solved, 0.5 on the right
        track, 0 failed or off track."""
        if self.solved:
            return 1.0
        if self.done:
            return 0.0
        return 0.5 if self.on_track() else 0.0

    @property
    def answer(self) -> str:
        return str(self.task["answer"])

    # -- what each environment defines -------------------------------------------------------------------

    def _check(self, task: dict[str, Any]) -> dict[str, Any]:
        return task

    def default_max_steps(self) -> int:
        return 16

    def _start(self) -> None: ...

    def question(self) -> str:
        raise NotImplementedError

    def is_action(self, line: str) -> bool:
        raise NotImplementedError

    def act(self, line: str) -> Observation:
        raise NotImplementedError

    def read(self, line: str) -> None:
        """A reasoning line (not an action): environments that track it for the oracle override this."""

    def check_answer(self, text: str) -> bool:
        return text == self.answer

    def on_track(self) -> bool:
        return True


def _positive_int(v: Any, field: str, most: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most:
        raise InputError(f"task field {field!r} must be an integer in 1..{most} (got {v!r})")
    return v
