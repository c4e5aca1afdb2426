"""No request can freeze the server, and its limits hold without a key.

Each freeze test sends the request in a thread and polls ``/health`` until it
is answered: every poll must come back within a second, and the request must
end in a 4xx or a bounded error.

The second is the server's: a poll's latency is its wall time less the time
the machine kept this process's threads waiting for a core (Linux schedstat),
so a test run on a loaded machine measures the server, not the load. A server
blocked by a request (a regex holding the GIL, a blocked event loop) is still
caught: its threads wait for the GIL or the loop, not for a core. The poll
reuses one connection, so what is timed is the server's answer, not the
client's TLS and connection setup.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

PROMPT = "Q: 37+48-19=\n"


def _runqueue_waits() -> dict[str, int]:
    """Nanoseconds each thread of this process has spent runnable but not running (empty off Linux)."""
    waits = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return waits
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                waits[tid] = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass  # a thread that ended meanwhile
    return waits


def _load_delay(before: dict[str, int], after: dict[str, int]) -> float:
    """The longest any one thread waited for a core between two readings, in seconds.

    The longest, not the sum: a poll can be late by at least this much for the machine's sake alone, and
    counting one wait only keeps the estimate on the side of blaming the server."""
    return max((after[t] - before[t] for t in after.keys() & before.keys()), default=0) / 1e9


def while_in_flight(url: str, send) -> tuple[httpx.Response | Exception, float]:
    """Run ``send()`` in a thread; poll /health meanwhile. Returns (its response, the slowest /health in s).

    A poll's time excludes what the machine's load alone cost it (see the module docstring); the wall time
    of a poll is bounded too, by the 5 s timeout."""
    out: dict = {}

    def run():
        try:
            out["r"] = send()
        except Exception as e:  # a client timeout is an outcome too
            out["r"] = e

    t = threading.Thread(target=run)
    slowest = 0.0
    with httpx.Client(base_url=url, timeout=5) as http:
        assert http.get("/health").status_code == 200  # the connection is open before the request
        t.start()
        while t.is_alive():
            waits, t0 = _runqueue_waits(), time.perf_counter()
            assert http.get("/health").status_code == 200
            wall = time.perf_counter() - t0
            slowest = max(slowest, wall - _load_delay(waits, _runqueue_waits()))
            time.sleep(0.05)
    t.join()
    return out["r"], slowest


@pytest.fixture(scope="module")
def capped(serve_app):
    """A server with a small per-request compute cap."""
    from steerable.serve import build

    engine, app = build("builtin", prm="builtin", device="cpu", max_request_tokens=3000, max_budget=64)
    s = serve_app(app)
    s.engine = engine
    yield s
    s.close()


def test_a_catastrophic_answer_regex_does_not_freeze_the_server(server):
    body = {
        "prompt": PROMPT,
        "max_tokens": 200,
        "seed": 42,
        "scaling": {"method": "sc", "budget": 4, "answer_regex": "^((.|\\n)+)+!$"},
    }
    r, slowest = while_in_flight(server.url, lambda: httpx.post(server.url + "/v1/completions", json=body, timeout=60))
    assert r.status_code == 200 and r.json()["steerable"]["answer"] is None  # matched nothing, in linear time
    assert slowest < 1.0


def test_a_scaling_run_over_the_cap_is_stopped_with_an_error(capped):
    # pgibbs at its largest sweeps reads far more than 3,000 tokens: it is stopped, not left to run
    body = {
        "prompt": PROMPT,
        "max_tokens": 200,
        "seed": 1,
        "scaling": {"method": "pgibbs", "budget": 16, "scorer": "prm", "options": {"sweeps": 16}},
    }
    t0 = time.perf_counter()
    r, slowest = while_in_flight(capped.url, lambda: httpx.post(capped.url + "/v1/completions", json=body, timeout=120))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "request_too_large" and "--max-request-tokens of 3000" in err["message"]
    assert slowest < 1.0 and time.perf_counter() - t0 < 30
    ok = httpx.post(capped.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 3}, timeout=30)
    assert ok.status_code == 200  # the engine is free again


def test_a_generation_over_the_cap_is_refused_up_front(capped):
    from steerable.serve.routes import Routes  # noqa: F401 - the cap is the server's, computed before queueing

    body = {"prompt": [PROMPT] * 4, "n": 2, "max_tokens": 400}  # up to 8 x 400 tokens
    r = httpx.post(capped.url + "/v1/completions", json=body, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "request_too_large"
    assert "over the server's --max-request-tokens of 3000" in r.json()["error"]["message"]
    assert capped.engine.running_rows == 0 and capped.engine.queue_depth == 0  # nothing was queued
    small = httpx.post(capped.url + "/v1/completions", json={"prompt": PROMPT, "n": 2, "max_tokens": 100}, timeout=30)
    assert small.status_code == 200


def test_score_partials_over_the_context_or_the_cap_are_a_400(server, capped):
    partials = ["37+48=85\n" * 450] * 64  # 4,000 characters each, past the PRM's 512-token context
    r, slowest = while_in_flight(
        server.url,
        lambda: httpx.post(server.url + "/v1/score", json={"prompt": PROMPT, "partials": partials}, timeout=60),
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "partials[0]"
    assert "over the scorer's context of" in r.json()["error"]["message"] and slowest < 1.0
    one = httpx.post(server.url + "/v1/score", json={"prompt": PROMPT, "partials": ["1" * 3000]}, timeout=30)
    assert one.status_code == 400 and "context" in one.json()["error"]["message"]
    many = ["37+48=85\n85-19=66\n" * 10] * 64  # each fits; together over 3,000 tokens
    r = httpx.post(capped.url + "/v1/score", json={"prompt": PROMPT, "partials": many}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "request_too_large"


def _spy_submissions(engine) -> list:
    """Records what the engine is given, and what each item then emits (``item.events``: (kind, payload, time))."""
    seen: list = []
    submit = engine.submit

    def spy(item):
        item.events = []
        emit = item.emit

        def record(kind, payload):
            item.events.append((kind, payload, time.perf_counter()))
            emit(kind, payload)

        item.emit = record
        seen.append(item)
        submit(item)

    engine.submit = spy
    return seen


def test_a_client_that_leaves_a_non_streaming_request_frees_its_rows(server):
    seen = _spy_submissions(server.engine)
    try:
        body = {"prompt": [PROMPT, "Q: 5+5=\n"], "n": 4, "max_tokens": 200, "ignore_eos": True, "temperature": 1.0}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/completions", json=body, timeout=0.5)
        req = seen[-1]
        deadline = time.time() + 30  # a bound on waiting only: what is asserted is the order of events
        while not req.cancelled and time.time() < deadline:
            time.sleep(0.02)
        # noticed while decoding, not after: the engine never finished its 8 x 200 tokens
        assert req.cancelled and not [kind for kind, *_ in req.events if kind == "done"], req.events
        while server.engine.running_rows and time.time() < deadline:
            time.sleep(0.02)
        assert server.engine.running_rows == 0
        assert id(req) not in server.engine._trackers
    finally:
        del server.engine.submit


def test_a_client_that_leaves_a_scaling_request_stops_its_run(server):
    from steerable.serve.scaling import Cancelled

    seen = _spy_submissions(server.engine)
    try:
        body = {
            "prompt": PROMPT,
            "max_tokens": 200,
            "seed": 5,
            "scaling": {"method": "pgibbs", "budget": 16, "scorer": "prm", "options": {"sweeps": 16}},
        }
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/completions", json=body, timeout=0.5)
        left = time.perf_counter()
        job = seen[-1]
        deadline = time.time() + 30
        while not job.events and time.time() < deadline:
            time.sleep(0.02)
        ((kind, payload, at),) = job.events
        assert job.cancelled and kind == "error" and isinstance(payload, Cancelled)  # stopped, not finished
        assert at - left < 10  # at its next step, not after 16 sweeps
        r = httpx.post(server.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 3}, timeout=60)
        assert r.status_code == 200
    finally:
        del server.engine.submit


def test_a_chunked_body_over_the_limit_is_refused_while_reading(serve_app):
    from steerable.serve import build

    engine, app = build("builtin", device="cpu", max_body_bytes=100_000)
    s = serve_app(app)
    sent = 0

    def body():
        nonlocal sent
        for _ in range(3000):  # 3,000 x 16 KB = 48 MB, with no content-length
            sent += 16384
            yield b"x" * 16384

    try:
        try:
            r = httpx.post(s.url + "/v1/completions", content=body(), timeout=30)
            assert r.status_code == 413 and "over the limit of 100000" in r.json()["error"]["message"]
        except httpx.TransportError:
            pass  # the server closed the connection while the client was still sending: also refused
        assert sent < 16 << 20  # it stopped reading near the limit (socket buffers aside), not after 48 MB
        assert httpx.post(s.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 2}).status_code == 200
    finally:
        s.close()


def test_metrics_label_routes_by_template_and_unmatched_paths_once(server):
    with httpx.Client() as http:
        for i in range(30):
            assert http.get(f"{server.url}/v1/nope-{i}").status_code == 404
    text = httpx.get(server.url + "/metrics").text
    assert "nope-" not in text
    assert 'steerable_requests_total{route="unmatched",status="404"}' in text
    httpx.post(server.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 2})
    text = httpx.get(server.url + "/metrics").text
    assert 'steerable_requests_total{route="/v1/completions",status="200"}' in text


@pytest.mark.parametrize("public", [False, True])
def test_with_a_key_docs_schema_and_metrics_need_it(serve_app, public):
    from steerable.serve import build

    engine, app = build("builtin", device="cpu", api_key="sekrit", public_metrics=public)
    s = serve_app(app)
    key = {"Authorization": "Bearer sekrit"}
    try:
        for path in ("/docs", "/openapi.json", "/redoc", "/v1/models", "/v1/nope"):
            assert httpx.get(s.url + path).status_code == 401, path
            assert httpx.get(s.url + path, headers={"Authorization": "Bearer sekri"}).status_code == 401, path
        assert httpx.get(s.url + "/openapi.json", headers=key).status_code == 200
        assert httpx.get(s.url + "/v1/nope", headers=key).status_code == 404
        assert httpx.get(s.url + "/metrics").status_code == (200 if public else 401)
        assert httpx.get(s.url + "/metrics", headers=key).status_code == 200
        assert httpx.get(s.url + "/health").status_code == 200
    finally:
        s.close()
