"""Every bad input is a 4xx naming the field: never a 500, never a silent 200 with meaningless output."""

from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

PROMPT = "Q: 37+48-19=\n"
BIG = 10**400  # a 401-digit integer
CHAT = [{"role": "user", "content": PROMPT}]


def post(server, path: str, body) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, content=raw, headers={"content-type": "application/json"}, timeout=60)


def scaling(**spec):
    return {"prompt": PROMPT, "max_tokens": 60, "scaling": {"method": "pf", "budget": 2, **spec}}


# (path, body, the field the error must name, a phrase of the message)
CASES = [
    ("/v1/completions", {"prompt": PROMPT, "n": BIG}, "n", "less than or equal"),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": BIG}, "max_tokens", "less than or equal"),
    ("/v1/completions", scaling(budget=BIG), "scaling.budget", "less than or equal"),
    ("/v1/completions", {"prompt": PROMPT, "steering": {"name": "noise", "strength": BIG}}, "steering.strength", ""),
    ("/v1/completions", {"prompt": PROMPT, "stream": True, "stream_options": "yes"}, "stream_options", "valid"),
    ("/v1/completions", {"prompt": PROMPT, "stream_options": {"include_usage": True}}, None, "with stream"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "messages[0].content[0].text",
        "valid string",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages[0].content[0].type",
        "not supported",
    ),
    ("/v1/completions", scaling(scorer=["prm"]), "scaling.scorer", "valid string"),
    ("/v1/completions", scaling(scorer={"a": 1}), "scaling.scorer", "valid string"),
    ("/v1/score", {"prompt": PROMPT, "partials": ["x"], "scorer": ["prm"]}, "scorer", "valid string"),
    ("/v1/completions", scaling(options=5), "scaling.options", "dictionary"),
    ("/v1/completions", scaling(options=[1]), "scaling.options", "dictionary"),
    ("/v1/completions", scaling(answer_regex=5), "scaling.answer_regex", "valid string"),
    ("/v1/completions", scaling(answer_regex="(?=x)"), "scaling.answer_regex", "RE2"),
    ("/v1/completions", scaling(method="beam", options={"expansions": "x"}), "scaling.options", "expansions"),
    ("/v1/completions", scaling(method="beam", options={"expansions": 0}), "scaling.options", "expansions must"),
    ("/v1/completions", scaling(method="mcts", options={"c_uct": "a"}), "scaling.options", "c_uct must be a number"),
    ("/v1/completions", scaling(method="refine", options={"template": "{0}"}), "scaling.options", "template"),
    (
        "/v1/completions",
        scaling(method="refine", options={"template": "{prompt.__class__.__mro__[1].__subclasses__}"}),
        "scaling.options",
        "not allowed",
    ),
    ("/v1/completions", scaling(method="pgibbs", options={"delimiter": ""}), "scaling.options", "delimiter"),
    ("/v1/completions", scaling(method="pgibbs", options={"sweeps": 1_000_000}), "scaling.options", "sweeps"),
    ("/v1/completions", scaling(options={"temperature": float("nan")}), "scaling.options", "finite"),
    ("/v1/completions", {"prompt": PROMPT, "temperature": float("nan")}, "temperature", "finite"),
    ("/v1/completions", {"prompt": PROMPT, "stop": ""}, "stop", "non-empty"),
    ("/v1/completions", {"prompt": PROMPT, "stop": [""]}, "stop[0]", "non-empty"),
    ("/v1/completions", {"prompt": PROMPT, "best_of": 2}, "best_of", "not supported"),
    ("/v1/completions", {"prompt": PROMPT, "logit_bias": {"5": 10}}, "logit_bias", "not supported"),
    ("/v1/completions", {"prompt": PROMPT, "presence_penalty": 0.5}, "presence_penalty", "not supported"),
    ("/v1/completions", {"prompt": PROMPT, "frequency_penalty": -1}, "frequency_penalty", "not supported"),
    ("/v1/completions", {"prompt": PROMPT, "suffix": "A: 66"}, "suffix", "not supported"),
    ("/v1/completions", {"prompt": PROMPT, "mystery": 1}, "mystery", "not a field"),
    (
        "/v1/chat/completions",
        {"messages": CHAT, "response_format": {"type": "json_object"}},
        "response_format",
        "not supported",
    ),
    ("/v1/chat/completions", {"messages": CHAT, "tools": [{"type": "function"}]}, "tools[0].function", "required"),
    (  # the arithmetic model has no tool format
        "/v1/chat/completions",
        {"messages": CHAT, "tools": [{"type": "function", "function": {"name": "calculator"}}]},
        "tools",
        "no tool format",
    ),
    ("/v1/chat/completions", {"messages": CHAT, "top_logprobs": 2}, None, "needs logprobs"),
    ("/v1/completions", {"prompt": PROMPT, "echo": True, "stream": True}, "echo", "not supported with stream"),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": 0}, "max_tokens", "echo"),
    ("/v1/completions", {"prompt": [5, 10**6]}, "prompt", "vocabulary"),
    ("/v1/completions", {"prompt": 5}, "prompt", "must be a string, a list of strings"),
    ("/v1/completions", {"prompt": PROMPT, "logprobs": 99}, "logprobs", "less than or equal"),
    ("/v1/completions", {"prompt": PROMPT, "scaling": {"method": "pf", "budget": 2}, "logprobs": 1}, "scaling", ""),
]


@pytest.mark.parametrize("path,body,param,needle", CASES, ids=[f"{c[2]}:{i}" for i, c in enumerate(CASES)])
def test_bad_field_is_a_400_naming_it(server, path, body, param, needle):
    r = post(server, path, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert needle in err["message"] and "\n" not in err["message"]
    if param:
        assert err["message"].startswith(param) or param.split(".")[0] in err["message"]


@pytest.mark.parametrize("strength", ["NaN", "Infinity", "-Infinity", "1e30"])
def test_non_finite_or_huge_steering_strength_is_refused_even_with_logprobs(server, strength):
    raw = (
        '{"prompt": "Q: 1+1=\\n", "max_tokens": 3, "logprobs": 1, "steering": {"name": "noise", "strength": '
        + strength
        + "}}"
    ).encode()
    r = post(server, "/v1/completions", raw)
    assert r.status_code == 400 and r.json()["error"]["param"] == "steering.strength", r.text


@pytest.mark.parametrize(
    "path,raw,param",
    [
        ("/v1/completions", b'{"prompt": "\\ud800", "max_tokens": 3}', "prompt"),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "a\\ud800"}]}', "messages[0].content"),
        ("/v1/score", b'{"prompt": "\\udfff", "partials": ["x"]}', "prompt"),
        ("/v1/score", b'{"prompt": "Q", "partials": ["x\\ud800"]}', "partials[0]"),
    ],
)
def test_a_lone_surrogate_is_a_400(server, path, raw, param):
    r = post(server, path, raw)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and "surrogate" in r.json()["error"]["message"]


def test_unparseable_bodies_say_why(server):
    deep = b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = post(server, "/v1/completions", deep)
    assert r.status_code == 400 and "nested too deep" in r.json()["error"]["message"]
    long_seed = b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}"
    r = post(server, "/v1/completions", long_seed)
    assert r.status_code == 400 and "4,300 digits" in r.json()["error"]["message"]
    r = post(server, "/v1/completions", b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    assert post(server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 2}).status_code == 200  # serving on


def test_a_tiny_temperature_is_greedy_not_noise(server):
    greedy = post(server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 30, "temperature": 0})
    tiny = post(server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 30, "temperature": 1e-300, "seed": 1})
    assert tiny.status_code == 200 and tiny.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]
    assert "37+48" in greedy.json()["choices"][0]["text"]  # real text, not padding


def test_echo_puts_the_prompt_before_the_text(server):
    r = post(server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 20, "temperature": 0, "echo": True, "n": 2})
    plain = post(server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 20, "temperature": 0})
    assert r.status_code == 200
    assert [c["text"] for c in r.json()["choices"]] == [PROMPT + plain.json()["choices"][0]["text"]] * 2


def test_allowed_neutral_values_of_unsupported_fields_pass(server):
    body = {
        "prompt": PROMPT,
        "max_tokens": 3,
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "best_of": 1,
        "logit_bias": {},
        "suffix": "",
        "user": "u1",
    }
    assert post(server, "/v1/completions", body).status_code == 200
    chat = {"messages": CHAT, "max_tokens": 3, "response_format": {"type": "text"}, "tool_choice": "none"}
    assert post(server, "/v1/chat/completions", chat).status_code == 200
