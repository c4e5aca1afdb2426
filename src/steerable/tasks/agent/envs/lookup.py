"""The pointer-chain lookup: a hidden table read one cell at a time; its states are the cells revealed."""

from __future__ import annotations

import re
from collections.abc import Mapping

from steerable.errors import InputError
from steerable.tasks.agent.envs.base import AgentEnv, Observation


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
