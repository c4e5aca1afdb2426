"""OpenAI tool calling in ``/v1/chat/completions``: the model asks, the client runs the tool.

A request with ``tools`` gets ``message.tool_calls`` and ``finish_reason:
"tool_calls"`` when the model calls one; the client sends each result back as
a ``role: tool`` message (with the call's ``tool_call_id``) after the
assistant message that holds the calls, and asks again. The server never runs
a tool and never runs anything a client sends: a tool's schema is only shown
to the model.

Two formats, chosen when the server starts (``--tool-format``):

- ``agent``: the built-in agent model (``builtin:agent``), whose world has
  four tools (:mod:`steerable.agents.tools`). The conversation is rendered
  into its lines; generation stops after the first action line, which comes
  back as a call. Tools it does not have are refused; the schemas a client
  sends for its own tools are not shown to it (it knows them by training).
- ``chat``: a chat model whose template takes ``tools`` (``apply_chat_template
  (tools=...)``); calls are read from its text in the Hermes/Qwen convention
  (``<tool_call>{...}</tool_call>``, or one bare JSON object).

Decoding is not constrained: ``tool_choice`` ``none`` offers no tool and a
named function is offered alone, but the model may still answer in text;
``required`` is refused since nothing here could enforce it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerable.agents.chat import parse_tool_calls
from steerable.agents.tools import TOOLS, AgentChat, guess_tool
from steerable.errors import InputError
from steerable.serve.openai import APIError
from steerable.serve.schemas import ChatCompletionRequest

FORMATS = ("auto", "agent", "chat", "off")
Call = tuple[str, Any]


def detect(model: str, tokenizer) -> str:
    """``agent`` for the built-in agent model (by name, or a directory its trainer wrote), ``chat`` for a
    tokenizer with a chat template, else ``off``."""
    if model in ("builtin:agent", "builtin:agent-plan"):
        return "agent"
    record = Path(model) / "training.json"
    if record.is_file():
        try:
            words = str(json.loads(record.read_text()).get("command", "")).split()
            if words[1:3] in (["agent", "train"], ["agent", "train-model"]):
                return "agent"
        except (ValueError, OSError):
            pass
    return "chat" if getattr(tokenizer, "chat_template", None) is not None else "off"


@dataclass
class ToolTurn:
    """A tool request made ready for the engine: its prompt, where generation stops, how text is read back."""

    ids: list[int]
    stop_line: Callable[[str], bool] | None  # a generated line after which the row stops (an action)
    read: Callable[[str], tuple[str, list[Call]]]  # text -> (content, calls)


def wants_tools(body: ChatCompletionRequest) -> bool:
    return (
        bool(body.tools)
        or body.tool_choice not in (None, "none")
        or any(m.tool_calls or m.role == "tool" for m in body.messages)
    )


class ToolCalling:
    """The tool path of chat requests for one tokenizer and format (``agent``, ``chat`` or ``off``)."""

    def __init__(self, tokenizer, fmt: str):
        self.tok, self.fmt = tokenizer, fmt

    def prepare(self, body: ChatCompletionRequest) -> ToolTurn:
        if self.fmt == "off":
            raise APIError(400, "this model has no tool format: serve builtin:agent or a chat model whose template "
                           "takes tools", "tools")  # fmt: skip
        if body.stream:
            raise APIError(400, "tool calls are not streamed: ask without stream", "stream")
        if body.scaling is not None:
            raise APIError(400, "a scaling request takes no tools: leave one of them out", "scaling")
        offered = self._offered(body)
        messages = self._messages(body, offered)
        return self._agent(messages, offered, body) if self.fmt == "agent" else self._chat(messages, offered, body)

    # -- checks shared by both formats ---------------------------------------------------------------------

    def _offered(self, body: ChatCompletionRequest) -> list[str]:
        names = [t.function.name for t in body.tools or ()]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise APIError(400, f"tools[{i}]: a second tool named {name!r}: names must differ",
                               f"tools[{i}].function.name")  # fmt: skip
            if self.fmt == "agent" and name not in TOOLS:
                raise APIError(400, f"the built-in agent model has no tool {name!r}: its world has "
                               f"{', '.join(TOOLS)}", f"tools[{i}].function.name")  # fmt: skip
        choice = body.tool_choice
        if choice is not None and choice != "none" and not names:
            raise APIError(400, "tool_choice needs tools: send the tools it chooses from", "tool_choice")
        if choice == "none":
            return []
        if choice is not None and choice != "auto":
            if choice.function.name not in names:
                raise APIError(400, f"tool_choice names {choice.function.name!r}, which is not in tools",
                               "tool_choice.function.name")  # fmt: skip
            return [choice.function.name]
        return names

    def _messages(self, body: ChatCompletionRequest, offered: list[str]) -> list[dict[str, Any]]:
        """The conversation as plain dicts (arguments as dicts, tool results named), every call answered by
        a tool message before the conversation goes on and every tool message answering an earlier call."""
        known = {t.function.name for t in body.tools or ()} | ({*TOOLS} if self.fmt == "agent" else set())
        calls: dict[str, str] = {}  # id -> function name
        waiting: list[tuple[str, str]] = []  # (id, where) of calls not answered yet
        out = []
        for i, m in enumerate(body.messages):
            content = "".join(p.text for p in m.content) if isinstance(m.content, list) else m.content
            msg: dict[str, Any] = {"role": m.role, "content": content or ""}
            if m.role == "tool":
                if m.tool_call_id not in calls:
                    raise APIError(400, f"messages[{i}]: tool_call_id {m.tool_call_id!r} answers no earlier call",
                                   f"messages[{i}].tool_call_id")  # fmt: skip
                waiting = [w for w in waiting if w[0] != m.tool_call_id]
                msg.update(tool_call_id=m.tool_call_id, name=calls[m.tool_call_id])
            elif waiting:
                raise APIError(400, f"{waiting[0][1]}: no tool message answers it before messages[{i}]: send "
                               "each call's result right after the assistant message", waiting[0][1])  # fmt: skip
            for j, call in enumerate(m.tool_calls or ()):
                where = f"messages[{i}].tool_calls[{j}]"
                if call.id in calls:
                    raise APIError(400, f"{where}: id {call.id!r} is used twice", f"{where}.id")
                if call.function.name not in known:
                    raise APIError(400, f"{where}: {call.function.name!r} is not a tool of this request",
                                   f"{where}.function.name")  # fmt: skip
                try:
                    args = json.loads(call.function.arguments or "{}")
                except (ValueError, RecursionError):
                    args = None
                if not isinstance(args, dict):
                    raise APIError(400, f"{where}: arguments must be a JSON object as text",
                                   f"{where}.function.arguments")  # fmt: skip
                calls[call.id] = call.function.name
                waiting.append((call.id, where))
            if m.tool_calls:
                msg["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                    "name": c.function.name, "arguments": json.loads(c.function.arguments or "{}")}}
                    for c in m.tool_calls]  # fmt: skip
            out.append(msg)
        if waiting:
            raise APIError(400, f"{waiting[0][1]}: no tool message answers it: send its result", waiting[0][1])
        return out

    # -- the formats ---------------------------------------------------------------------------------------

    def _agent(self, messages: list[dict[str, Any]], offered: list[str], body) -> ToolTurn:
        question = messages[0]["content"] if messages else ""
        chat = AgentChat(TOOLS[guess_tool(question, offered)] if offered else None)
        try:
            text = chat.render(messages)
        except InputError as e:
            field = str(e).split(":", 1)[0]
            raise APIError(400, str(e), field if field.startswith("messages[") else "messages") from None
        return ToolTurn(self.tok(text)["input_ids"], chat.is_action, chat.read)

    def _chat(self, messages: list[dict[str, Any]], offered: list[str], body) -> ToolTurn:
        tools = [t.model_dump(exclude_none=True) for t in body.tools or () if t.function.name in offered]
        try:
            text = self.tok.apply_chat_template(
                messages, tools=tools or None, add_generation_prompt=True, tokenize=False
            )
        except Exception as e:  # a template that rejects these messages
            raise APIError(400, f"the chat template rejected the messages: {e}", "messages") from None

        def read(out: str) -> tuple[str, list[Call]]:
            content, calls = parse_tool_calls(out)
            if not calls or any(name not in offered for name, _ in calls):
                return out, []  # a call to a tool not offered is no call: the text goes back as it is
            return content, calls

        return ToolTurn(self.tok(text, add_special_tokens=False)["input_ids"], None, read)


def tool_message(content: str, calls: list[Call]) -> dict[str, Any]:
    """The assistant message of a choice that calls tools (OpenAI's shape: arguments as JSON text)."""
    return {
        "role": "assistant",
        "content": content or None,
        "tool_calls": [
            {
                "id": "call_" + uuid.uuid4().hex[:24],
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
            for name, args in calls
        ],
    }
