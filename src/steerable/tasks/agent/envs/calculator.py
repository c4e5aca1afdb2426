"""The calculator environment: tool-integrated reasoning over arithmetic chains."""

from __future__ import annotations

import re

from steerable.errors import InputError
from steerable.tasks.agent.calc import CalcError, evaluate
from steerable.tasks.agent.envs.base import AgentEnv, Observation

#: The most operations a calculator task holds.
MAX_OPS = 8


class Calculator(AgentEnv):
    """A chain ``a0 op1 a1 op2 ...`` evaluated left to right; the tool evaluates any ``>>>`` expression
    (usual precedence, :mod:`~steerable.tasks.agent.calc`). Task: ``{"env": "calculator", "expression":
    "37*48+19"}`` (``answer`` optional, computed)."""

    name = "calculator"
    tools_header = "[calc]"
    text_only = True

    def _check(self, task):
        expr = task.get("expression")
        if not isinstance(expr, str) or not re.fullmatch(rf"\d{{1,4}}([+\-*]\d{{1,4}}){{1,{MAX_OPS}}}", expr):
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
