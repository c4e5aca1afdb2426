"""Tool calling over HTTP with the official ``openai`` client: the model asks, the client runs the tool."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_model

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from steerable.tasks.agent.calc import evaluate  # noqa: E402

#: what the memorising model writes: the built-in agent format, two calculator calls, then the answer
TRANSCRIPT = "[calc] Q: 37*48+19=\n>>> 37*48\n= 1776\n>>> 1776+19\n= 1795\nA: 1795"
CALC = {
    "type": "function",
    "function": {"name": "calculator", "parameters": {"type": "object", "properties": {"expression": {}}}},
}
QUESTION = [{"role": "user", "content": "Q: 37*48+19="}]


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory, char_tokenizer):
    """A tiny Llama that has memorised :data:`TRANSCRIPT` (a random one would never call a tool; the shipped
    agent model may not be there yet): greedy decoding writes it back from any of its prefixes."""
    torch.manual_seed(0)
    model = tiny_model("llama", char_tokenizer).train()
    ids = torch.tensor([char_tokenizer(TRANSCRIPT)["input_ids"] + [char_tokenizer.eos_token_id]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    d = tmp_path_factory.mktemp("agent")
    model.eval().save_pretrained(d)
    char_tokenizer.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def servers(agent_dir, serve_app):
    """The memorising model served twice: with the prefix cache and without."""
    from steerable.serve import build

    out = {}
    for name, mb in (("cached", 64.0), ("plain", 0.0)):
        engine, app = build(
            agent_dir, device="cpu", model_name="agent", tool_format="agent", prefix_cache_mb=mb, max_tokens=64
        )
        out[name] = serve_app(app)
        out[name].engine = engine
    yield out
    for s in out.values():
        s.close()


def tool_loop(server, turns: int = 4):
    """The client's loop: ask, run every call the model makes with the calculator, send results back."""
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    messages, replies = list(QUESTION), []
    for _ in range(turns):
        r = client.chat.completions.create(model="agent", messages=messages, tools=[CALC], temperature=0, max_tokens=40)
        replies.append(r)
        msg = r.choices[0].message
        if not msg.tool_calls:
            break
        messages.append(msg.model_dump(exclude_none=True))
        for call in msg.tool_calls:
            result = evaluate(json.loads(call.function.arguments)["expression"])
            messages.append({"role": "tool", "tool_call_id": call.id, "content": str(result)})
    return replies


def test_a_tool_loop_with_the_openai_client(servers):
    replies = tool_loop(servers["cached"])
    first = replies[0].choices[0]
    assert first.finish_reason == "tool_calls"
    (call,) = first.message.tool_calls
    assert call.type == "function" and call.id and call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": "37*48"}
    assert first.message.content is None
    assert [r.choices[0].finish_reason for r in replies] == ["tool_calls", "tool_calls", "stop"]
    assert replies[-1].choices[0].message.content == "A: 1795"
    assert replies[-1].choices[0].message.tool_calls is None


def test_the_prefix_cache_changes_no_output_and_prefills_less(servers):
    servers["cached"].engine.prefix.store.clear()  # an earlier test ran the same loop
    cached, plain = tool_loop(servers["cached"]), tool_loop(servers["plain"])
    strip = [r.choices[0].message.model_dump(exclude={"tool_calls": {"__all__": {"id"}}}) for r in cached]
    assert strip == [r.choices[0].message.model_dump(exclude={"tool_calls": {"__all__": {"id"}}}) for r in plain]
    assert [r.usage.prompt_tokens for r in cached] == [r.usage.prompt_tokens for r in plain]
    hits = [r.usage.prompt_tokens_details.cached_tokens for r in cached]
    assert hits[0] == 0 and all(h > 0 for h in hits[1:])
    # every later turn prefills only what is new: the tool result and the action line's newline
    assert all(r.usage.prompt_tokens - h <= 12 for r, h in zip(cached[1:], hits[1:], strict=True))
    assert all(r.usage.prompt_tokens_details.cached_tokens == 0 for r in plain)


def post(server, body) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)


def _history(**edit):
    call = {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "37*48"}'}}
    msgs = [*QUESTION, {"role": "assistant", "content": None, "tool_calls": [call]}]
    return msgs + [{"role": "tool", "tool_call_id": edit.get("answer", "c1"), "content": "1776"}]


def _tool(**fn):
    return {"type": "function", "function": {"name": "calculator", **fn}}


CASES = [
    ({"tools": [{"type": "retrieval", "function": {"name": "x"}}]}, "tools[0].type", "function"),
    ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name", "required"),
    ({"tools": [_tool(name="c" * 65)]}, "tools[0].function.name", "at most 64"),
    ({"tools": [_tool(name="a b")]}, "tools[0].function.name", "pattern"),
    ({"tools": [_tool(parameters={"type": "string"})]}, "tools[0].function.parameters", "object"),
    ({"tools": [_tool(parameters=[1])]}, "tools[0].function.parameters", "dictionary"),
    ({"tools": [_tool()] * 129}, "tools", "at most 128"),
    ({"tools": [_tool(), _tool()]}, "tools[1].function.name", "names must differ"),
    ({"tools": [_tool(name="weather")]}, "tools[0].function.name", "has no tool 'weather'"),
    (
        {"tools": [_tool()], "tool_choice": {"type": "function", "function": {"name": "get"}}},
        "tool_choice.function.name",
        "not in tools",
    ),  # fmt: skip
    ({"tools": [_tool()], "tool_choice": "required"}, "tool_choice", "required is not supported"),
    ({"tool_choice": "auto"}, "tool_choice", "needs tools"),
    ({"tools": [_tool()], "stream": True}, "stream", "not streamed"),
    ({"tools": [_tool()], "messages": _history(answer="c9")}, "messages[2].tool_call_id", "answers no earlier"),
    ({"tools": [_tool()], "messages": _history()[:2]}, "messages[1].tool_calls[0]", "no tool message"),
    ({"tools": [_tool()], "messages": [{"role": "tool", "content": "1"}]}, "messages[0].tool_call_id", "is required"),
    (
        {
            "tools": [_tool()],
            "messages": [
                {
                    **m,
                    "tool_calls": [
                        {
                            **m["tool_calls"][0],
                            "function": {"name": "calculator", "arguments": '{"expression": "1\\nA: 2"}'},
                        }
                    ],
                }
                if m["role"] == "assistant"
                else m
                for m in _history()
            ],
        },
        "messages[1].tool_calls[0].function.arguments",
        "integer arithmetic",
    ),  # fmt: skip
    (
        {
            "tools": [_tool()],
            "messages": [
                {**m, "tool_calls": [{**m["tool_calls"][0], "function": {"name": "calculator", "arguments": "[1]"}}]}
                if m["role"] == "assistant"
                else m
                for m in _history()
            ],
        },
        "messages[1].tool_calls[0].function.arguments",
        "JSON object",
    ),  # fmt: skip
    ({"tools": [_tool()], "messages": [{"role": "system", "content": "hi"}, *QUESTION]}, "messages[0]", "system"),
]


@pytest.mark.parametrize("edit, param, needle", CASES)
def test_bad_tools_are_a_400_naming_the_field(servers, edit, param, needle):
    body = {"messages": QUESTION, "max_tokens": 8, **edit}
    r = post(servers["cached"], body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    assert needle in err["message"], err


def test_tool_choice_none_offers_no_tool(servers):
    r = post(servers["cached"], {"messages": QUESTION, "tools": [_tool()], "tool_choice": "none", "max_tokens": 30})
    assert r.status_code == 200
    assert "tool_calls" not in r.json()["choices"][0]["message"]  # no header: the text-only form, no calls read


def _agent_scaling(server, scaling: dict):
    import httpx as hx

    body = {"model": "agent", "messages": QUESTION, "seed": 0, "scaling": scaling}
    return hx.post(server.url + "/v1/chat/completions", json=body, timeout=60)


def test_a_server_side_agent_search_runs_in_the_servers_own_environment(servers):
    task = {"env": "calculator", "expression": "37*48+19"}
    r = _agent_scaling(servers["cached"], {"method": "greedy", "task": task})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["choices"][0]["message"]["content"] == ">>> 37*48\n= 1776\n>>> 1776+19\n= 1795\nA: 1795"
    meta = out["steerable"]
    assert meta["success"] is True and meta["answer"] == "1795" and meta["real_steps"] == 2
    assert meta["cost"]["env_steps"] == meta["cost"]["tool_calls"] == 2 and meta["cost"]["env_tokens"] > 0
    bon = _agent_scaling(servers["cached"], {"method": "bon", "budget": 2, "task": task}).json()["steerable"]
    assert bon["cost"]["env_steps"] >= 2 and bon["method"] == "bon"


@pytest.mark.parametrize(
    ("scaling", "needle"),
    [
        ({"method": "greedy", "task": {"env": "calculator", "expression": "1/0"}}, "scaling.task"),
        ({"method": "greedy", "task": {"env": "casino"}}, "scaling.task"),
        ({"method": "pf", "task": {"env": "calculator", "expression": "2+3"}}, "scaling.method"),
        ({"method": "tree", "budget": 9999, "task": {"env": "calculator", "expression": "2+3"}}, "scaling.budget"),
        ({"method": "tree", "value": "psychic", "task": {"env": "calculator", "expression": "2+3"}}, "scaling.value"),
        ({"method": "tree", "value": "head:/etc", "task": {"env": "calculator", "expression": "2+3"}}, "scaling.value"),
        (
            {
                "method": "plangen",
                "options": {"prior": "/etc/passwd"},
                "task": {"env": "calculator", "expression": "2+3"},
            },
            "scaling.options",
        ),
        (
            {"method": "ctrls", "options": {"policy": "/tmp"}, "task": {"env": "calculator", "expression": "2+3"}},
            "scaling.options",
        ),
    ],
)
def test_bad_agent_scaling_is_a_400_naming_the_field(servers, scaling, needle):
    r = _agent_scaling(servers["plain"], scaling)
    assert r.status_code == 400 and needle in r.text, r.text


def test_an_agent_search_stops_at_the_servers_environment_step_cap(agent_dir, serve_app):
    from steerable.serve import build

    _, app = build(agent_dir, device="cpu", model_name="agent", tool_format="agent", max_request_env_steps=1)
    server = serve_app(app)
    try:
        r = _agent_scaling(server, {"method": "greedy", "task": {"env": "calculator", "expression": "37*48+19"}})
        assert r.status_code == 400 and "--max-request-env-steps" in r.text, r.text
    finally:
        server.close()


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "user", "content": "hi", "tool_calls": []}, "messages[0].tool_calls"),
        ({"role": "user", "content": "hi", "tool_call_id": "c1"}, "messages[0].tool_call_id"),
        ({"role": "wizard", "content": "hi"}, "messages[0]"),
    ],
)
def test_a_message_carries_only_its_roles_fields(servers, message, param):
    import httpx as hx

    r = hx.post(servers["plain"].url + "/v1/chat/completions", json={"messages": [message]}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_the_planning_model_is_served_with_the_agent_format_and_runs_iad_server_side(serve_app):
    import httpx as hx

    from steerable.serve import build
    from steerable.serve.tools import detect

    assert detect("builtin:agent-plan", None) == "agent" and detect("builtin", None) == "off"
    _, app = build("builtin:agent-plan", device="cpu", model_name="plan", tool_format="auto", max_tokens=512)
    server = serve_app(app)
    try:
        task = {"env": "chains", "start": 37, "ops": "+48-19*3+5"}
        body = {"model": "plan", "messages": QUESTION, "seed": 0,
                "scaling": {"method": "iad", "budget": 3, "task": task}}  # fmt: skip
        r = hx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        meta = r.json()["steerable"]
        assert meta["method"] == "iad" and 1 <= meta["info"]["counts"]["calls"] <= 3 and meta["cost"]["env_steps"] >= 2
    finally:
        server.close()
