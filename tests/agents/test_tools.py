"""The agent world's tools: OpenAI schemas, a call <-> an environment line, and the built-in model's chat format."""

from __future__ import annotations

import json

import pytest

from steerable.agents.tools import TOOLS, AgentChat, ToolError, guess_tool, schemas, to_call, to_line
from steerable.errors import InputError
from steerable.tasks.agent import data
from steerable.tasks.agent.envs import make_env

TASKS = {
    "calculator": ({"env": "calculator", "expression": "37*48+19"}, {"expression": "37*48"}, "= 1776"),
    "get": ({"env": "lookup", "start": "k3", "table": {"k3": "k7", "k7": "42"}}, {"key": "k3"}, "= k7"),
    "move": ({"env": "maze", "grid": "S..../...../...../...../....G"}, {"direction": "r"}, "= 0,1"),
    "next": ({"env": "chains", "start": 37, "ops": "+48-19*3+5"}, {}, "= +48-19*3"),
}


@pytest.mark.parametrize("name", list(TASKS))
def test_a_call_is_one_environment_line_and_back(name):
    task, args, observed = TASKS[name]
    env = make_env(task["env"])
    env.reset(task)
    line = to_line(name, json.dumps(args))  # arguments arrive as JSON text from a client
    assert to_call(line) == (name, args)
    assert env.step(line).text == observed
    schema = next(s for s in schemas() if s["function"]["name"] == name)
    assert schema["type"] == "function" and schema["function"]["parameters"]["type"] == "object"
    assert sorted(schema["function"]["parameters"]["properties"]) == sorted(args)


@pytest.mark.parametrize(
    "name, arguments, phrase",
    [
        ("calculator", {"expression": "1+1\nA: 5"}, "integer arithmetic"),  # a newline would be a line of its own
        ("calculator", {"expression": "x" * 3}, "integer arithmetic"),
        ("calculator", {"expression": "1" * 65}, "at most 64"),
        ("calculator", {"expression": 5}, "got 5"),
        ("calculator", {"expression": "1", "extra": 1}, "no argument 'extra'"),
        ("move", {"direction": "up"}, "one of u, d, l, r"),
        ("get", {"key": "k3 k4"}, "such as k3"),
        ("next", {"n": 1}, "no argument 'n'"),
        ("calculator", "{not json", "JSON object"),
        ("calculator", "[1]", "JSON object"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(name, arguments, phrase):
    with pytest.raises(ToolError, match=phrase) as e:
        to_line(name, arguments if isinstance(arguments, str) else json.dumps(arguments))
    assert e.value.field == "arguments"


def test_an_unknown_tool_names_the_name():
    with pytest.raises(ToolError, match="no tool 'weather'") as e:
        to_line("weather", {})
    assert e.value.field == "name"


def _messages(expression: str) -> list[dict]:
    """The tool-style demonstration of ``expression`` as an OpenAI conversation."""
    env = make_env("calculator")
    question = env.reset({"env": "calculator", "expression": expression}).split(" ", 1)[1].strip()
    msgs = [{"role": "user", "content": question}]
    segs = data.calc_demo({"env": "calculator", "expression": expression, "answer": 1795}, "tool")[1:]
    for k, ((line, _), (obs, _)) in enumerate(zip(segs[0:-1:2], segs[1::2], strict=True)):
        call = {"id": f"c{k}", "type": "function", "function": {"name": "calculator", "arguments":
                json.dumps({"expression": line.removeprefix(">>> ").strip()})}}  # fmt: skip
        msgs += [{"role": "assistant", "content": None, "tool_calls": [call]},
                 {"role": "tool", "tool_call_id": f"c{k}", "content": obs.removeprefix("= ").strip()}]  # fmt: skip
    return msgs + [{"role": "assistant", "content": segs[-1][0]}]


def test_agent_chat_renders_the_demonstration_text_exactly():
    msgs = _messages("37*48+19")
    text = "".join(
        t for t, _ in data.calc_demo({"env": "calculator", "expression": "37*48+19", "answer": 1795}, "tool")
    )
    assert AgentChat(TOOLS["calculator"]).render(msgs) == text + "\n"
    # the model's part read back: reasoning lines are content, the action line a call
    chat = AgentChat(TOOLS["calculator"])
    assert chat.read("37*48=1776\n>>> 1776+19\n") == ("37*48=1776\n", [("calculator", {"expression": "1776+19"})])
    assert chat.read("A: 1795") == ("A: 1795", [])
    assert chat.is_action(">>> 1+2") and not chat.is_action("1+2=3")
    assert not AgentChat(None).is_action(">>> 1+2")  # tool_choice none: the text-only form, no calls read


@pytest.mark.parametrize(
    "edit, phrase",
    [
        (lambda m: m.pop(2), r"messages\[1\].tool_calls\[0\]: no tool message answers it"),
        (lambda m: m.insert(0, {"role": "system", "content": "be nice"}), "reads no system message"),
        (lambda m: m.append({"role": "user", "content": "again"}), "takes one question"),
        (lambda m: m[2].update(content="1\n2"), "one line"),
        (lambda m: m[1]["tool_calls"][0]["function"].update(name="weather"), r"function.name: .*no tool"),
    ],
)
def test_agent_chat_refuses_what_the_format_cannot_hold(edit, phrase):
    msgs = _messages("37*48+19")
    edit(msgs)
    with pytest.raises(InputError, match=phrase):
        AgentChat(TOOLS["calculator"]).render(msgs)


def test_the_header_follows_the_question():
    assert guess_tool("Q: find k3", ["calculator", "get"]) == "get"
    assert guess_tool("Q: maze S..../.....", list(TOOLS)) == "move"
    assert guess_tool("Q: 3*4=", list(TOOLS)) == "calculator"
    assert guess_tool("Q: find k3", ["move"]) == "move"  # what is offered wins
