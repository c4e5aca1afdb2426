"""A Hugging Face chat model acting in the agent world through its chat template's tool calling.

:class:`ChatCodec` is the :class:`~steerable.agents.process.Codec` for any
chat model whose template takes ``tools`` (Qwen2.5, Llama 3.1, Hermes, ...):
the prompt is ``tokenizer.apply_chat_template(messages, tools=schemas,
add_generation_prompt=True)``; the model's calls are read from its text in the
Hermes/Qwen convention (``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``,
or one bare JSON object), each becomes the environment line of
:mod:`steerable.agents.tools`, and the environment's answer is written back as
the template renders a ``role: tool`` message (the conversation rendered with
and without it, the difference appended, generation prompt included). So
``AgentProcess(generator, codec=ChatCodec(tokenizer, env))`` runs an episode
on a chat model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from steerable.agents.tools import ToolError, schemas, to_call, to_line, tool_of
from steerable.errors import ConfigError
from steerable.tasks.agent.envs import ANSWER, AgentEnv

TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
#: what a chat model is told so that the environment can read its answer
SYSTEM = "Use the tool when it helps. Give the final answer on a line of its own as 'A: <answer>'."


def parse_tool_calls(text: str) -> tuple[str, list[tuple[str, Any]]]:
    """``(content, [(name, arguments), ...])`` of a chat model's text.

    Calls are ``<tool_call>{json}</tool_call>`` blocks (the content is the
    text around them), or, with no such block, the whole text as one JSON
    object with a ``name`` (Llama 3.1's convention). A block that is not a JSON
    object with a string ``name`` stays in the content: it is not a call.
    """
    calls, kept, at = [], [], 0
    for m in TOOL_CALL.finditer(text):
        call = _call(m.group(1))
        if call is None:
            continue
        kept.append(text[at : m.start()])
        at = m.end()
        calls.append(call)
    if calls:
        return "".join([*kept, text[at:]]).strip(), calls
    bare = _call(text.strip()) if text.strip().startswith("{") else None
    return ("", [bare]) if bare is not None else (text, [])


def _call(raw: str) -> tuple[str, Any] | None:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    return obj["name"], args


def chat_messages_for(line: str, observation: str) -> list[dict[str, Any]]:
    """The assistant message calling the tool of ``line`` and the tool message answering it (HF's format:
    arguments as a dict, as templates expect)."""
    found = to_call(line)
    if found is None:
        raise ConfigError(f"{line!r} is no tool call of the agent world")
    name, args = found
    call = {"id": "call_0", "type": "function", "function": {"name": name, "arguments": args}}
    return [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "name": name, "content": observation},
    ]


@dataclass(frozen=True, eq=False)
class ChatCodec:
    """The agent world on a chat model: its template renders the tools, its tool-call text is read back."""

    tokenizer: Any
    env: AgentEnv
    system: str | None = SYSTEM
    stop: tuple[str, ...] = ("</tool_call>",)
    tools: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ConfigError("ChatCodec needs a tokenizer with a chat template: use LineCodec for the built-in model")
        object.__setattr__(self, "tools", schemas([tool_of(self.env).name]))

    def render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tools=self.tools, add_generation_prompt=generation_prompt, tokenize=False
        )

    def _question(self, prompt_line: str) -> list[dict[str, Any]]:
        question = prompt_line.strip().removeprefix(tool_of(self.env).header).strip()
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": question}]

    # -- the Codec protocol --------------------------------------------------------------------------------

    def prompt(self, env: AgentEnv, prompt_line: str) -> str:
        return self.render(self._question(prompt_line), generation_prompt=True)

    def lines(self, text: str, final: bool) -> list[str]:
        """Answer lines (``A: ...``) of the content, then each call's environment line; a call that fits no
        tool of the world is dropped (the model writes on)."""
        content, calls = parse_tool_calls(text)
        out = [ln.strip() for ln in content.split("\n") if ANSWER.match(ln.strip())]
        for name, args in calls:
            try:
                out.append(to_line(name, args if isinstance(args, dict | str) else repr(args)))
            except ToolError:
                continue
        return out

    def observation(self, env: AgentEnv, line: str, text: str) -> str:
        """The template's ``role: tool`` message for ``text`` and the next generation prompt, written after
        the model's stop string (whatever the template puts after a call, such as an end-of-turn, first)."""
        question = self._question("Q")  # any question: only what follows the call is used
        call, result = chat_messages_for(line, text.removeprefix("= ").strip())
        base = self.render([*question, call], generation_prompt=False)
        full = self.render([*question, call, result], generation_prompt=True)
        cut = base.rfind(self.stop[0])
        if not full.startswith(base) or cut < 0:
            raise ConfigError(
                "the chat template does not render a tool result as text appended to the conversation, or writes "
                f"calls without {self.stop[0]!r}: this model's tool format is not supported"
            )
        return full[cut + len(self.stop[0]) :]
