"""Long chains served in rounds: the environment of IterResearch's workspace against the growing transcript."""

from __future__ import annotations

import re

from steerable.errors import InputError
from steerable.tasks.agent.envs.base import AgentEnv, Observation

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
        return len(chain_ops(self.task["ops"])) // CHUNK + 3

    def _start(self) -> None:
        self.ops = chain_ops(self.task["ops"])
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


def review(task: dict, text: str) -> tuple[int, int, list[int]]:
    """The environment's feedback on a whole transcript: ``(right, rounds, reports)``, the reports (``S: n``
    values, in order), how many of them are right before the first wrong one, and the chain's rounds (one report
    per round of three operations). Iterative agent decoding shows this to the model (:func:`feedback_line`)."""
    ops = chain_ops(task["ops"])
    values = running_values(task["start"], task["ops"])
    rounds = (len(ops) + CHUNK - 1) // CHUNK
    reports = [int(m.group(1)) for m in re.finditer(r"^S:\s*(-?\d+)\s*$", text, re.MULTILINE)][:rounds]
    right = 0
    for i, r in enumerate(reports):
        if r != values[min((i + 1) * CHUNK, len(ops))]:
            break
        right += 1
    return right, rounds, reports


def feedback_line(label: str, right: int, rounds: int, reports: list[int]) -> str:
    """``best 2/4: 576 568 640``: a candidate's reports with the environment's count of the right ones."""
    return f"{label} {right}/{rounds}:" + "".join(f" {r}" for r in reports)


def chain_ops(ops: str) -> list[tuple[str, int]]:
    return [(m.group(1), int(m.group(2))) for m in re.finditer(r"([+\-*])(\d+)", ops)]


def running_values(start: int, ops: str) -> list[int]:
    """The chain's value after 0, 1, 2, ... operations."""
    out = [start]
    for op, b in chain_ops(ops):
        a = out[-1]
        out.append(a + b if op == "+" else a - b if op == "-" else a * b)
    return out
