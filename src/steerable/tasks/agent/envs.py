"""The environments of the built-in agent world: plain Python objects a language model acts in.

Every environment reads the model's text one line at a time. :meth:`AgentEnv.step`
returns an :class:`Observation` when the line was an action (the process then
writes ``text`` into the context, on its own line) and ``None`` for any other
line (reasoning). An answer line ``A: ...`` ends the episode. Each environment
is deterministic and :meth:`AgentEnv.clone` copies its whole state, so a search
can fork it; :func:`replay` rebuilds a state from a transcript (the
reset-and-replay of Koh et al.'s tree search) and is also the exact verifier.

=============  ======================  ==============================================
environment    action                  observation
=============  ======================  ==============================================
calculator     ``>>> 37*48``           ``= 1776``
lookup         ``get k3``              ``= k7`` / ``= k7 k2`` / ``= 42`` / ``= none``
maze           ``go u`` (u d l r)      ``= 2,3`` / ``= wall`` / ``= goal``
chains         ``next``                ``= +48-19*3`` (the next three operations) / ``= end``
=============  ======================  ==============================================

A task is a JSON object (:mod:`steerable.tasks.agent.data` writes the built-in
splits in this format; ``--task FILE.jsonl`` reads it). Every episode has a
cap on environment steps (``max_steps``); an action past it is answered
``= out of steps`` and ends the episode unsolved.
"""

from __future__ import annotations

import copy
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from steerable.errors import InputError
from steerable.tasks.agent.calc import CalcError, evaluate

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


class Calculator(AgentEnv):
    """A chain ``a0 op1 a1 op2 ...`` evaluated left to right; the tool evaluates any ``>>>`` expression
    (usual precedence, :mod:`~steerable.tasks.agent.calc`). Task: ``{"env": "calculator", "expression":
    "37*48+19"}`` (``answer`` optional, computed)."""

    name = "calculator"
    tools_header = "[calc]"
    text_only = True

    def _check(self, task):
        expr = task.get("expression")
        if not isinstance(expr, str) or not re.fullmatch(r"\d{1,4}([+\-*]\d{1,4}){1,8}", expr):
            raise InputError(f"task field 'expression' must be a chain like '37*48+19' (got {expr!r})")
        nums, ops = re.findall(r"\d+", expr), re.findall(r"[+\-*]", expr)
        acc = int(nums[0])
        for op, b in zip(ops, nums[1:], strict=True):
            acc = evaluate(f"{acc}{op}{b}") if acc >= 0 else evaluate(f"0-{-acc}{op}{b}")
        if "answer" in task and str(task["answer"]) != str(acc):
            raise InputError(f"task answer {task['answer']!r} is not the chain's value {acc}: fix or drop it")
        task["answer"] = acc
        return task

    def default_max_steps(self) -> int:
        return 8

    def question(self) -> str:
        return f"Q: {self.task['expression']}="

    def is_action(self, line: str) -> bool:
        return line.startswith(">>>")

    def act(self, line: str) -> Observation:
        try:
            return Observation(f"= {evaluate(line[3:])}")
        except CalcError as e:
            return Observation(f"= error: {e}")


class Lookup(AgentEnv):
    """A hidden table of keys; ``get k3`` reveals a cell: one key to follow, two (a fork: one leads on, the
    other into a dead end that ends in ``none``), or the number that answers the question. Task:
    ``{"env": "lookup", "start": "k3", "table": {"k3": "k7 k2", "k7": "42", "k2": "none"}, "max_steps": 4}``;
    the answer is the number at the end of the live path (computed)."""

    name = "lookup"
    tools_header = "[get]"

    def _check(self, task):
        table, start = task.get("table"), task.get("start")
        if not isinstance(table, dict) or not table or len(table) > 32:
            raise InputError("task field 'table' must map 1..32 keys to cells such as 'k7', 'k7 k2', '42', 'none'")
        for k, v in table.items():
            if not re.fullmatch(r"k\d{1,2}", str(k)) or not isinstance(v, str) or len(v) > 16:
                raise InputError(f"task table entry {k!r}: {v!r} is not a key kN with a short cell text")
        if start not in table:
            raise InputError(f"task field 'start' must be a key of the table (got {start!r})")
        path = live_path(table, start)
        if path is None:
            raise InputError(f"the table has no path from {start!r} to a number: every chain must end in one")
        task["answer"] = int(table[path[-1]])
        return task

    def default_max_steps(self) -> int:
        return len(live_path(self.task["table"], self.task["start"])) + 2

    def _start(self) -> None:
        self.path = live_path(self.task["table"], self.task["start"])
        self.revealed: list[str] = []

    def question(self) -> str:
        return f"Q: find {self.task['start']}"

    def is_action(self, line: str) -> bool:
        return line.startswith("get ")

    def act(self, line: str) -> Observation:
        key = line[4:].strip()
        cell = self.task["table"].get(key)
        if cell is None:
            return Observation("= no such key")
        self.revealed.append(key)
        return Observation(f"= {cell}")

    def check_answer(self, text: str) -> bool:
        return text == self.answer

    def on_track(self) -> bool:
        """The last cell read lies on the live path, and its rest still fits in the steps left."""
        if not self.revealed:
            return True
        last = self.revealed[-1]
        if last not in self.path:
            return False
        return len(self.path) - 1 - self.path.index(last) <= self.max_steps - self.steps


def live_path(table: Mapping[str, str], start: str) -> list[str] | None:
    """The keys from ``start`` to the cell holding a number (depth-first over forks), or None."""

    def walk(key: str, seen: frozenset) -> list[str] | None:
        if key in seen or key not in table:
            return None
        cell = table[key].split()
        if len(cell) == 1 and cell[0].isdigit():
            return [key]
        for nxt in cell:
            rest = walk(nxt, seen | {key}) if nxt.startswith("k") else None
            if rest:
                return [key, *rest]
        return None

    return walk(start, frozenset())


MOVES = {"u": (-1, 0), "d": (1, 0), "l": (0, -1), "r": (0, 1)}


class Maze(AgentEnv):
    """A 5x5 grid written in the prompt (rows joined by ``/``: ``S`` start, ``G`` goal, ``#`` wall, ``.``
    open); ``go u`` moves and is answered with the new position ``row,col``, ``wall`` (no move) or ``goal``
    (solved). Dead ends and the step cap make a wrong turn irreversible. Task: ``{"env": "maze", "grid":
    "S..#./.#.../...#./.#.G./.....", "max_steps": 9}``."""

    name = "maze"
    tool = False
    tools_header = "[go]"

    def _check(self, task):
        grid = task.get("grid")
        rows = grid.split("/") if isinstance(grid, str) else []
        if len(rows) != 5 or any(len(r) != 5 or set(r) - set(".#SG") for r in rows):
            raise InputError("task field 'grid' must be 5 rows of 5 characters from '.#SG' joined by '/'")
        if grid.count("S") != 1 or grid.count("G") != 1:
            raise InputError("task field 'grid' must hold exactly one S and one G")
        if distances(grid)[_find(grid, "S")] is None:
            raise InputError("the maze's goal cannot be reached from its start")
        return task

    def default_max_steps(self) -> int:
        return distances(self.task["grid"])[_find(self.task["grid"], "S")] + 2

    def _start(self) -> None:
        self.dist = distances(self.task["grid"])
        self.pos = _find(self.task["grid"], "S")
        self.progressed = True

    @property
    def answer(self) -> str:
        return "goal"

    def question(self) -> str:
        return f"Q: maze {self.task['grid']}"

    def is_action(self, line: str) -> bool:
        return line.startswith("go ")

    def act(self, line: str) -> Observation:
        move = MOVES.get(line[3:].strip())
        if move is None:
            self.progressed = False
            return Observation("= unknown move: use u d l r")
        r, c = self.pos[0] + move[0], self.pos[1] + move[1]
        if not (0 <= r < 5 and 0 <= c < 5) or self.task["grid"].split("/")[r][c] == "#":
            self.progressed = False
            return Observation("= wall")
        before, self.pos = self.dist[self.pos], (r, c)
        self.progressed = self.dist[self.pos] is not None and self.dist[self.pos] < before
        if self.dist[self.pos] == 0:
            self.done = self.solved = True
            return Observation("= goal", done=True)
        return Observation(f"= {r},{c}")

    def check_answer(self, text: str) -> bool:
        return False  # a maze is solved by reaching the goal, not by saying so

    def on_track(self) -> bool:
        d = self.dist[self.pos]
        return self.progressed and d is not None and d <= self.max_steps - self.steps


def _find(grid: str, ch: str) -> tuple[int, int]:
    i = grid.replace("/", "").index(ch)
    return divmod(i, 5)


def distances(grid: str) -> dict[tuple[int, int], int | None]:
    """Moves from every cell to the goal (breadth-first; None where the goal cannot be reached)."""
    rows = grid.split("/")
    out: dict[tuple[int, int], int | None] = {(r, c): None for r in range(5) for c in range(5)}
    goal = _find(grid, "G")
    out[goal], todo = 0, deque([goal])
    while todo:
        r, c = todo.popleft()
        for dr, dc in MOVES.values():
            nr, nc = r + dr, c + dc
            if 0 <= nr < 5 and 0 <= nc < 5 and rows[nr][nc] != "#" and out[(nr, nc)] is None:
                out[(nr, nc)] = out[(r, c)] + 1
                todo.append((nr, nc))
    return out


CHUNK = 3


class Chains(AgentEnv):
    """A long chain served in rounds: ``next`` reveals the next three operations (``= +48-19*3``), ``= end``
    once they are spent. The model keeps the running value in ``S: n`` lines and answers ``A: n``. Task:
    ``{"env": "chains", "start": 37, "ops": "+48-19*3+5"}`` (left to right; the answer is computed)."""

    name = "chains"
    tools_header = "[next]"

    def _check(self, task):
        start, ops = task.get("start"), task.get("ops")
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= 999:
            raise InputError(f"task field 'start' must be an integer in 0..999 (got {start!r})")
        if not isinstance(ops, str) or not re.fullmatch(r"([+\-*]\d{1,2}){1,40}", ops):
            raise InputError(f"task field 'ops' must be 1..40 operations such as '+48-19*3' (got {ops!r})")
        task["answer"] = running_values(start, ops)[-1]
        return task

    def default_max_steps(self) -> int:
        return len(_ops(self.task["ops"])) // CHUNK + 3

    def _start(self) -> None:
        self.ops = _ops(self.task["ops"])
        self.values = running_values(self.task["start"], self.task["ops"])
        self.served = 0
        self.reports_ok = True

    def question(self) -> str:
        return f"Q: chain from {self.task['start']}"

    def is_action(self, line: str) -> bool:
        return line == "next"

    def act(self, line: str) -> Observation:
        if self.served >= len(self.ops):
            return Observation("= end")
        chunk = self.ops[self.served : self.served + CHUNK]
        self.served += len(chunk)
        return Observation("= " + "".join(f"{op}{b}" for op, b in chunk))

    def read(self, line: str) -> None:
        m = re.fullmatch(r"S:\s*(-?\d+)", line)
        if m:
            self.reports_ok = self.reports_ok and int(m.group(1)) == self.values[self.served]

    def on_track(self) -> bool:
        return self.reports_ok and len(self.ops) - self.served <= CHUNK * (self.max_steps - self.steps)


def _ops(ops: str) -> list[tuple[str, int]]:
    return [(m.group(1), int(m.group(2))) for m in re.finditer(r"([+\-*])(\d+)", ops)]


def running_values(start: int, ops: str) -> list[int]:
    """The chain's value after 0, 1, 2, ... operations."""
    out = [start]
    for op, b in _ops(ops):
        a = out[-1]
        out.append(a + b if op == "+" else a - b if op == "-" else a * b)
    return out


ENVS: dict[str, type[AgentEnv]] = {e.name: e for e in (Calculator, Lookup, Maze, Chains)}


def make_env(name: str) -> AgentEnv:
    """A fresh environment by name (``calculator``, ``lookup``, ``maze``, ``chains``; ``builtin:`` optional)."""
    key = name.removeprefix("builtin:")
    if key not in ENVS:
        raise InputError(f"unknown environment {name!r}: use one of {', '.join('builtin:' + k for k in ENVS)}")
    return ENVS[key]()


def replay(env: AgentEnv, text: str) -> AgentEnv:
    """A clone of ``env`` (just reset) after reading the model's part of ``text`` line by line.

    ``text`` is a transcript as the process writes it (the model's lines and
    the observations); observation lines are skipped, since the clone writes
    its own. The clone's ``solved`` is the exact verdict on the transcript.
    """
    out = env.clone()
    for line in text.split("\n"):
        if out.done:
            break
        if line.startswith("= "):
            continue
        out.step(line)
    return out
