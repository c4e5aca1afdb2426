"""The agent world's tools as OpenAI function tools, and the built-in agent model's text as chat messages.

Every environment of :mod:`steerable.tasks.agent.envs` has one action; here
each is an OpenAI function tool with a JSON schema, and a tool call maps to
exactly one environment line and back:

=============  ==========================  ==============  ==========================
tool           arguments                   line            environment
=============  ==========================  ==============  ==========================
calculator     ``{"expression": "37*48"}``  ``>>> 37*48``   calculator (``= 1776``)
get            ``{"key": "k3"}``            ``get k3``      lookup
move           ``{"direction": "u"}``       ``go u``        maze
next           ``{}``                       ``next``        chains
=============  ==========================  ==============  ==========================

:class:`AgentChat` renders an OpenAI message list into the built-in agent
model's format (the prompt ``[calc] Q: 37*48+19=``, the model's lines, an
action answered by ``= ...`` on its own line) and reads generated text back
into tool calls, so a server speaks OpenAI tool calling with that model while
the client runs the tools. Arguments are checked against the schema and
bounded: an argument cannot smuggle a newline (a line of its own) into the
model's context.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from steerable.errors import InputError
from steerable.tasks.agent.calc import MAX_CHARS
from steerable.tasks.agent.envs import AgentEnv


class ToolError(InputError):
    """A tool call that fits no tool of the agent world; ``field`` is the part at fault (``name``,
    ``arguments``)."""

    def __init__(self, message: str, field: str = "arguments"):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Tool:
    """One action of the agent world: its OpenAI schema and its environment line (``prefix`` + argument)."""

    name: str
    env: str  # the environment it acts in
    header: str  # how a prompt offering it starts
    prefix: str  # the line's start; the argument follows
    arg: str | None  # the one argument's name (None: no argument)
    check: Callable[[str], bool]  # what the argument may be
    hint: str  # what a valid argument looks like
    description: str
    arg_schema: Mapping[str, Any] | None = None

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI function tool (``{"type": "function", "function": {...}}``)."""
        props = {self.arg: dict(self.arg_schema or {})} if self.arg else {}
        params = {"type": "object", "properties": props, "required": [self.arg] if self.arg else []}
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": params}}  # fmt: skip

    def line(self, arguments: Mapping[str, Any] | str) -> str:
        """The environment line of a call (``arguments`` a mapping or its JSON text); :class:`ToolError` if
        they do not fit the schema."""
        args = _arguments(arguments)
        extra = sorted(set(args) - ({self.arg} if self.arg else set()))
        if extra:
            raise ToolError(
                f"{self.name} takes no argument {extra[0]!r}" + (f": only {self.arg!r}" if self.arg else "")
            )
        if self.arg is None:
            return self.prefix
        value = args.get(self.arg)
        if not isinstance(value, str) or not self.check(value):
            raise ToolError(f"{self.name}'s {self.arg!r} must be {self.hint} (got {_short(value)})")
        return f"{self.prefix}{value.strip()}"

    def call(self, line: str) -> dict[str, Any] | None:
        """The arguments of an environment line that is this tool's action, else None."""
        line = line.strip()
        if self.arg is None:
            return {} if line == self.prefix else None
        if not line.startswith(self.prefix):
            return None
        value = line[len(self.prefix) :].strip()
        return {self.arg: value} if value and self.check(value) else None


def _arguments(arguments: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            raise ToolError(f"arguments must be a JSON object (got {_short(arguments)})") from None
    if not isinstance(arguments, Mapping):
        raise ToolError(f"arguments must be a JSON object (got {_short(arguments)})")
    return dict(arguments)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_EXPR = re.compile(rf"[0-9+\-*() ]{{1,{MAX_CHARS}}}")
TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool("calculator", "calculator", "[calc]", ">>> ", "expression", lambda v: bool(_EXPR.fullmatch(v.strip())),
             f"integer arithmetic: digits, + - * and parentheses, at most {MAX_CHARS} characters",
             "Evaluate integer arithmetic (+ - * and parentheses) exactly.",
             {"type": "string", "description": "An expression such as 37*48.", "maxLength": MAX_CHARS}),
        Tool("get", "lookup", "[get]", "get ", "key", lambda v: bool(re.fullmatch(r"k\d{1,2}", v.strip())),
             "a key of the table such as k3", "Read a cell of the hidden table: a key to follow, or the number.",
             {"type": "string", "description": "A key such as k3.", "pattern": "^k[0-9]{1,2}$"}),
        Tool("move", "maze", "[go]", "go ", "direction", lambda v: v.strip() in ("u", "d", "l", "r"),
             "one of u, d, l, r", "Move one cell in the maze: u(p), d(own), l(eft) or r(ight).",
             {"type": "string", "enum": ["u", "d", "l", "r"]}),
        Tool("next", "chains", "[next]", "next", None, lambda v: False, "nothing",
             "Reveal the next three operations of the chain."),
    )
}  # fmt: skip
BY_ENV: dict[str, Tool] = {t.env: t for t in TOOLS.values()}


def schemas(names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The OpenAI tool schemas of the named tools (default: all four)."""
    return [TOOLS[n].schema for n in (TOOLS if names is None else names)]


def tool_of(env: AgentEnv) -> Tool:
    """The tool an environment offers."""
    return BY_ENV[env.name]


def to_line(name: str, arguments: Mapping[str, Any] | str) -> str:
    """The environment line of the call ``name(arguments)``."""
    tool = TOOLS.get(name)
    if tool is None:
        raise ToolError(f"the agent world has no tool {name!r}: it has {', '.join(TOOLS)}", "name")
    return tool.line(arguments)


def to_call(line: str, offered: Sequence[str] | None = None) -> tuple[str, dict[str, Any]] | None:
    """``(name, arguments)`` if ``line`` is the action of an offered tool (default: any), else None."""
    for name in TOOLS if offered is None else offered:
        args = TOOLS[name].call(line)
        if args is not None:
            return name, args
    return None


def guess_tool(question: str, offered: Sequence[str]) -> str:
    """Which offered tool a question needs, read from the form each environment writes its question in
    (``Q: find k3``: get; ``Q: maze ...``: move; ``Q: chain from ...``: next; else calculator); the first
    offered tool when the needed one is not offered."""
    q = question.strip()
    for name, start in (("get", "Q: find "), ("move", "Q: maze "), ("next", "Q: chain from ")):
        if q.startswith(start) and name in offered:
            return name
    return "calculator" if "calculator" in offered else offered[0]


@dataclass(frozen=True)
class AgentChat:
    """The built-in agent model's text as OpenAI messages.

    ``tool`` is the offered tool (its header starts the prompt) or None (the
    text-only form, no header and no calls read). A conversation is one user
    message (the question, e.g. ``Q: 37*48+19=``), then assistant messages
    (their text lines, then their calls as action lines) each call followed
    by its result (a tool message, written ``= RESULT``).
    """

    tool: Tool | None

    def render(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The model's context for ``messages`` (dicts with ``role``, ``content``, ``tool_calls``,
        ``tool_call_id``); :class:`~steerable.errors.InputError` naming ``messages[i]`` when they do not fit
        the format. The model writes on from there."""
        results = {m["tool_call_id"]: m for m in messages if m.get("role") == "tool"}
        out = []
        for i, m in enumerate(messages):
            role, content = m.get("role"), _text(m.get("content"))
            if role == "user":
                if i != 0:
                    raise InputError(f"messages[{i}]: the built-in agent model takes one question, in the first "
                                     "message: start a new conversation for another")  # fmt: skip
                _one_line(content, f"messages[{i}].content")
                out.append(f"{self.tool.header} {content}\n" if self.tool else f"{content}\n")
            elif role == "assistant":
                if content:
                    out.append(content if content.endswith("\n") else content + "\n")
                for j, call in enumerate(m.get("tool_calls") or ()):
                    fn = call["function"]
                    try:
                        out.append(to_line(fn["name"], fn.get("arguments") or "{}") + "\n")
                    except ToolError as e:
                        raise InputError(f"messages[{i}].tool_calls[{j}].function.{e.field}: {e}") from None
                    answer = results.get(call.get("id"))
                    if answer is None:
                        raise InputError(f"messages[{i}].tool_calls[{j}]: no tool message answers it: send its result")
                    res = _text(answer.get("content")).strip()
                    _one_line(res, f"messages[{i}].tool_calls[{j}]'s tool result")
                    out.append((res if res.startswith("=") else f"= {res}") + "\n")
            elif role != "tool":  # tool messages are written after their calls
                raise InputError(f"messages[{i}]: the built-in agent model reads no {role} message: leave it out")
        if not out or messages[0].get("role") != "user":
            raise InputError("messages[0]: the conversation must start with the user's question")
        return "".join(out)

    def is_action(self, line: str) -> bool:
        """Whether a generated line is a call (generation stops after it)."""
        return self.tool is not None and self.tool.call(line) is not None

    def read(self, text: str) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        """``(content, calls)`` of generated text: the lines before an action, and the action as a call."""
        if self.tool is None:
            return text, []
        lines = text.split("\n")
        for k, line in enumerate(lines):
            args = self.tool.call(line)
            if args is not None:
                before = "\n".join(lines[:k])
                return (before + "\n" if before else ""), [(self.tool.name, args)]
        return text, []


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p["text"] if isinstance(p, Mapping) else str(getattr(p, "text", "")) for p in content)


def _one_line(text: str, where: str) -> None:
    if "\n" in text.strip():
        raise InputError(f"{where}: the built-in agent model reads it as one line: remove the newlines")
