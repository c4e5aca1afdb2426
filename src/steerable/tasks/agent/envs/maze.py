"""The 5x5 maze: moves that cannot be taken back under a cap on steps."""

from __future__ import annotations

from collections import deque

from steerable.errors import InputError
from steerable.tasks.agent.envs.base import AgentEnv, Observation

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
