"""A streamed scaling run: its events as they happen, then the very response a plain request gets."""

from __future__ import annotations

import json
import time

import pytest
import torch

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from steerable.tasks.builtin.arithmetic import parse_problem  # noqa: E402

PROMPT = "Q: 37+48-19=\n"


@pytest.fixture(scope="module")
def served(serve_app):
    from steerable.serve import build

    engine, app = build("builtin", device="cpu", max_budget=8, max_request_tokens=600)
    s = serve_app(app)
    s.engine = engine
    yield s
    s.close()


def sse(url: str, body: dict) -> tuple[int, list]:
    """The status and every ``data:`` payload of a streamed request (JSON decoded, ``[DONE]`` kept as is)."""
    with httpx.stream("POST", url, json=body, timeout=120) as r:
        if r.headers["content-type"].startswith("application/json"):
            r.read()
            return r.status_code, [r.json()]
        out = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                out.append(data if data == "[DONE]" else json.loads(data))
        return r.status_code, out


def replay(events: list[dict]) -> list[str]:
    """Each row's text of the last state the run stepped, rebuilt from the events alone."""
    shown: dict[int, list[str]] = {}
    last = None
    for e in events:
        if e["type"] == "step":
            shown[e["state"]] = e["previews"]
            last = e["state"]
        elif e["type"] == "select":
            shown[e["state"]] = [shown[e["from"]][p] for p in e["parents"]]
            last = e["state"]
    return shown[last]


def body(method: str = "pf", budget: int = 4, **kw) -> dict:
    return {"prompt": PROMPT, "max_tokens": 60, "seed": 3, "temperature": 1.0,
            "scaling": {"method": method, "budget": budget, "scorer": "oracle"}, **kw}  # fmt: skip


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_a_streamed_run_replays_to_the_answer_of_the_same_request_unstreamed(served, route):
    req = body()
    if route.endswith("chat/completions"):
        req["messages"] = [{"role": "user", "content": req.pop("prompt")}]
    plain = httpx.post(served.url + route, json=req, timeout=120).json()
    status, data = sse(served.url + route, {**req, "stream": True})
    assert status == 200 and data[-1] == "[DONE]"
    events = [d["event"] for d in data[:-2]]
    assert all(d["object"] == "steerable.event" for d in data[:-2])
    final = data[-2]
    assert final["object"] == plain["object"]
    for key in ("choices", "usage"):
        assert final[key] == plain[key]
    drop = lambda s: {k: v for k, v in s.items() if k != "cost"}  # noqa: E731 - seconds differ
    assert drop(final["steerable"]) == drop(plain["steerable"])
    assert events[0] == {"type": "init", "state": 0, "rows": 4}
    assert any(e["type"] == "select" for e in events)  # PF resampled, and the replay follows it
    rows = replay(events)
    chosen = plain["choices"][0].get("text") or plain["choices"][0]["message"]["content"]
    assert chosen in rows
    assert sorted(c["text"] for c in plain["steerable"]["candidates"]) == sorted(rows)
    scored = [e for e in events if e["type"] == "score"]
    assert len(scored) == plain["steerable"]["cost"]["scorer_calls"]  # one event per scorer call


def test_a_run_over_the_token_cap_streams_the_error_then_done(serve_app):
    from steerable.serve import build

    _, app = build("builtin", device="cpu", max_request_tokens=40)  # PF with 8 particles needs ~150
    s = serve_app(app)
    try:
        status, data = sse(s.url + "/v1/completions", {**body("pf", 8), "stream": True})
        ok = httpx.post(s.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 3}, timeout=30)
    finally:
        s.close()
    assert status == 200 and data[-1] == "[DONE]"
    assert data[0]["event"]["type"] == "init"  # it ran, and was stopped where it passed the cap
    assert all(d["object"] == "steerable.event" for d in data[:-2])
    err = data[-2]["error"]
    assert err["code"] == "request_too_large" and "--max-request-tokens of 40" in err["message"]
    assert ok.status_code == 200  # the engine is free again


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"scaling": {"method": "pf", "budget": 9}}, "scaling.budget"), ({"n": 2}, "n")],
)
def test_refusals_come_before_the_stream_as_a_plain_400(served, extra, param):
    req = {**body(), **extra, "stream": True}
    status, data = sse(served.url + "/v1/completions", req)
    assert status == 400 and data[0]["error"]["param"] == param
    if param == "scaling.budget":
        assert data[0]["error"]["message"] == "scaling.budget must be <= 8 (got 9)"


def test_a_client_that_leaves_a_stream_stops_the_run(served, monkeypatch):
    from steerable.serve.scaling import Cancelled, ScalingRun

    ended: list = []  # how the server's run ended: the exception it raised, or "finished"
    call = ScalingRun.__call__

    def recorded(self, generator):
        try:
            out = call(self, generator)
        except Exception as e:
            ended.append(e)
            raise
        ended.append("finished")
        return out

    monkeypatch.setattr(ScalingRun, "__call__", recorded)
    req = {**body("pf", 8, max_tokens=60), "stream": True}
    with httpx.stream("POST", served.url + "/v1/completions", json=req, timeout=60) as r:
        first = next(line for line in r.iter_lines() if line.startswith("data: "))
        assert json.loads(first[6:])["event"]["type"] == "init"
    for _ in range(400):  # the run notices at its next step, scorer call or event
        if ended:
            break
        time.sleep(0.05)
    assert len(ended) == 1 and isinstance(ended[0], Cancelled)
    text = httpx.get(served.url + "/metrics", timeout=10).text
    assert 'steerable_cancelled_total{route="/v1/completions"} 1.0' in text
    ok = httpx.post(served.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 3}, timeout=30)
    assert ok.status_code == 200


def test_a_builtin_problem_says_whether_the_answer_is_right(served):
    got = httpx.post(served.url + "/v1/completions", json=body("sc"), timeout=120).json()["steerable"]
    want = str(parse_problem(PROMPT).answer)
    assert got["expected"] == want == "66"
    assert got["correct"] == (got["answer"] == want)
    other = httpx.post(served.url + "/v1/completions", json={**body("sc"), "prompt": "hello"}, timeout=120).json()
    assert "correct" not in other["steerable"] and "expected" not in other["steerable"]


def test_a_controller_reports_the_per_layer_weights_it_chose_for_the_prompt(serve_app, tmp_path, local):
    from steerable.serve import build
    from steerable.steer.controller import ControllerConfig, read_features, train_controller
    from steerable.tasks.builtin.contrast import contrast_set

    harmful, benign = contrast_set("jailbreak")
    v = torch.randn(local.model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    ctl = train_controller(local.model, local.tokenizer, harmful[:16], benign[:16], v, ControllerConfig(epochs=1))
    engine, app = build("builtin", [f"ctl={ctl.save(tmp_path / 'ctl')}"], device="cpu")
    s = serve_app(app)
    try:
        got = {}
        for prompt in (harmful[0], PROMPT):
            req = {"prompt": prompt, "max_tokens": 4, "temperature": 0, "steering": {"name": "ctl", "strength": 5.0}}
            got[prompt] = httpx.post(s.url + "/v1/completions", json=req, timeout=60).json()["steerable"]["controller"]
        plain = httpx.post(s.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 4}, timeout=60).json()
        scaled = httpx.post(
            s.url + "/v1/completions", json={**body("sc", 2), "steering": {"name": "ctl", "strength": 5.0}}, timeout=60
        ).json()["steerable"]["controller"]
    finally:
        s.close()
    n = local.model.config.num_hidden_layers
    for prompt, c in got.items():
        # from scratch: the controller's net on the unsteered last-token outputs of the last read_layers layers
        with torch.no_grad():
            logit, w = ctl.net(read_features(local.model, local.tokenizer, [prompt], ctl.config.read_layers))
        assert c["layers"] == list(range(n)) and c["alpha"] == 5.0
        assert c["weights"] == pytest.approx(w[0].tolist(), abs=1e-5)
        assert c["scale"] == pytest.approx(float(torch.sigmoid(logit[0])), abs=1e-5)
    assert got[harmful[0]]["weights"] != got[PROMPT]["weights"]  # chosen per prompt
    assert scaled["weights"] == pytest.approx(got[PROMPT]["weights"], abs=1e-5)  # a scaling run reports it too
    assert "controller" not in plain["steerable"]
