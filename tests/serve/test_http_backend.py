"""The HTTP generator backend against our own server: strategies run unchanged, retries, errors."""

from __future__ import annotations

import pytest

httpx = pytest.importorskip("httpx")

from steerable.lm.http import HTTPClient, HTTPGenerator, RemoteError  # noqa: E402
from steerable.lm.types import SamplingParams  # noqa: E402
from steerable.reward.http import HTTPScorer  # noqa: E402
from steerable.search.lm_process import LMProcess  # noqa: E402
from steerable.search.registry import make_strategy  # noqa: E402

PROMPT = "Q: 37+48-19=\n"


@pytest.fixture(scope="module")
def remote(server):
    client = HTTPClient(server.url + "/v1", retries=0)
    return HTTPGenerator(client)


def test_generate_equals_local(remote, local):
    params = SamplingParams(temperature=0, max_new_tokens=60)
    got = remote.generate([PROMPT, "Q: 5+6=\n"], params)
    want = local.generate([PROMPT, "Q: 5+6=\n"], params)
    assert [c.text for c in got] == [c.text for c in want]
    assert remote.model == "builtin"
    assert remote.usage.generated_tokens == sum(c.usage.generated_tokens for c in want)


@pytest.mark.parametrize("mode", ["completions", "chat"])
def test_greedy_steps_over_http_equal_local_steps(remote, local, mode):
    greedy = make_strategy("greedy", lambda t: None)
    kw = dict(delimiter="\n", params=SamplingParams(temperature=0), max_step_tokens=64, max_steps=64, max_tokens=200)
    stepper = HTTPGenerator(remote.client, remote.model, remote.server, step_mode=mode)
    got = greedy.run(LMProcess(stepper, **kw), None, 1, PROMPT)
    want = greedy.run(LMProcess(local, **kw), None, 1, PROMPT)
    assert got.text == want.text and got.text.endswith("A: 66")
    assert got.cost.generated_tokens == want.cost.generated_tokens


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["steerable", "openai"])  # one request per step for all rows, or one per row
def test_scaling_strategies_run_unchanged_and_reproduce(remote, kind):
    remote = HTTPGenerator(remote.client, "builtin", server=kind)
    scorer = HTTPScorer(remote.client)
    prompt = PROMPT if kind == "steerable" else "Q: 12+34-5=\n"  # the server's PRM caches what it has scored
    proc = lambda: LMProcess(remote, delimiter="\n", params=SamplingParams(temperature=0.8), max_step_tokens=64)  # noqa: E731
    for method in ("sc", "pf", "beam"):
        a = make_strategy(method, lambda t: t.rsplit("A: ", 1)[-1] if "A: " in t else None)
        r1 = a.run(proc(), scorer, 4, prompt, seed=5)
        r2 = a.run(proc(), scorer, 4, prompt, seed=5)
        assert len(r1.candidates) >= 1 and r1.cost.generated_tokens > 0
        assert r1.text == r2.text and [c.text for c in r1.candidates] == [c.text for c in r2.candidates]
    assert scorer.calls > 0 and scorer.forward_tokens > 0


def test_token_budget_is_exact_over_http(remote):
    p = LMProcess(remote, delimiter="\n", params=SamplingParams(temperature=0.8), max_step_tokens=64, token_budget=50)
    res = make_strategy("sc", lambda t: None).run(p, None, 4, PROMPT, seed=1)
    assert 0 < res.cost.generated_tokens <= 50


def test_remote_scorer_equals_local(remote):
    from steerable.reward.prm import TokenClassifierPRM

    parts = ["37+48=85\n", "37+48=85\n85-19=66\nA: 66"]
    got = HTTPScorer(remote.client).score([PROMPT] * 2, parts)
    assert got == pytest.approx(TokenClassifierPRM.from_pretrained("builtin", device="cpu").score([PROMPT] * 2, parts))


def test_retries_on_5xx_and_429_then_succeeds(serve_app):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app, calls = FastAPI(), []

    @app.post("/v1/completions")
    async def flaky():
        calls.append(1)
        if len(calls) == 1:
            return JSONResponse({"error": {"message": "busy"}}, status_code=429)
        if len(calls) == 2:
            return JSONResponse({"error": {"message": "oops"}}, status_code=503)
        return {"choices": [{"text": "ok", "finish_reason": "stop"}], "usage": {"completion_tokens": 1}}

    @app.post("/v1/chat/completions")
    async def bad():
        return JSONResponse({"error": {"message": "messages must be a list"}}, status_code=400)

    s = serve_app(app)
    try:
        client = HTTPClient(s.url + "/v1", retries=3, backoff=0.01)
        out = HTTPGenerator(client, "m", server="openai").generate(["x"], SamplingParams())
        assert out[0].text == "ok" and len(calls) == 3 and client.retried == 2
        with pytest.raises(RemoteError, match="400: messages must be a list"):
            HTTPGenerator(client, "m", server="openai").generate([[{"role": "user", "content": "x"}]], SamplingParams())
        assert client.retried == 2  # a 4xx is not retried
    finally:
        s.close()


def test_unknown_model_is_one_clear_error(server):
    with pytest.raises(RemoteError, match="does not serve 'gpt-9': it serves builtin"):
        HTTPGenerator(HTTPClient(server.url + "/v1"), "gpt-9")


def test_unreachable_server_is_one_clear_error():
    client = HTTPClient("http://127.0.0.1:9/v1", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(RemoteError, match="failed after 2 tries.*is the server up"):
        HTTPGenerator(client, "m", server="openai").generate(["x"], SamplingParams())
    with pytest.raises(Exception, match="http://"):
        HTTPClient("127.0.0.1:8000")


@pytest.mark.slow
def test_scale_cli_over_http_with_remote_scorer(server, tmp_path):
    import json

    from typer.testing import CliRunner

    from steerable.cli import app

    args = ["scale", "--model", server.url + "/v1", "--scorer", "remote", "--task", "builtin:hard", "--limit", "2"]
    args += ["--methods", "sc,pf", "--budgets", "2", "--max-step-tokens", "32", "--out", str(tmp_path), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output.strip().splitlines()[-1])["rows"]
    assert {r["method"] for r in rows} == {"sc", "pf"} and all(r["errors"] == 0 for r in rows)
    assert next(r for r in rows if r["method"] == "pf")["scorer_calls"] > 0
