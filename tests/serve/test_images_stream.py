"""``POST /v1/images/generations`` with ``"stream": true``: the run's events, then the plain response, then [DONE]."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("diffusers")
pytest.importorskip("sklearn")

from fastapi.testclient import TestClient  # noqa: E402

ROUTE = "/v1/images/generations"


@pytest.fixture(scope="module")
def served():
    from steerable.serve import build

    engine, app = build("builtin:digits", max_request_nfe=1000, max_n=4)
    with TestClient(app) as client:
        yield client


def streamed(client, body: dict) -> tuple[list[dict], dict]:
    """(the events, the last JSON object) of a streamed request; the stream ends with [DONE]."""
    with client.stream("POST", ROUTE, json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    objs = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(o["object"] == "steerable.event" for o in objs[:-1])
    return [o["event"] for o in objs[:-1]], objs[-1]


def timeless(body: dict) -> dict:
    """A response without what differs between two runs of the same seed: the clock."""
    s = json.loads(json.dumps(body))
    s.pop("created")
    s["steerable"]["cost"].pop("seconds")
    for im in s["steerable"]["images"]:
        im.pop("seconds")
    return s


@pytest.mark.parametrize("method", ["bon", "fk", "dts-star", "fk-dps"])
def test_the_streams_last_object_is_the_plain_response_for_the_same_seed(served, method):
    body = {"prompt": "4", "n": 2, "seed": 11, "scaling": {"method": method, "budget": 3}}
    plain = served.post(ROUTE, json=body).json()
    events, final = streamed(served, body)
    assert timeless(final) == timeless(plain)  # the same images, verdicts, rewards and cost (NFE, reward calls)
    assert [e["image"] for e in events if e["type"] == "candidates"] == [0, 1]
    assert {e["type"] for e in events} <= {"init", "step", "score", "select", "concat", "candidates"}


def test_step_events_show_every_particle_without_a_model_call(served):
    """Best-of-3: 50 step events of 3 previews; step 1 shows the x0-prediction at x_T (computed here from
    scratch), the last step the final samples; the stream costs the plain run's 150 NFE."""
    from steerable.diffusion.worlds import load_world
    from steerable.serve.images import data_url

    events, final = streamed(served, {"prompt": "7", "seed": 3, "scaling": {"method": "bon", "budget": 3}})
    steps = [e for e in events if e["type"] == "step"]
    assert [e["index"] for e in steps] == [[k] * 3 for k in range(1, 51)]
    assert all(len(e["previews"]) == 3 and e["previews"][0].startswith("data:image/png;base64,") for e in steps)
    assert all(e["preview_of"] == ["last_step_x0"] * 3 for e in steps[:-1])
    assert steps[-1]["preview_of"] == ["sample"] * 3
    assert final["steerable"]["cost"]["nfe"] == 150 and final["steerable"]["cost"]["reward_calls"] == 1

    world = load_world("builtin:digits")
    process = world.process()
    x = process.init("7", 3, seed=3).x  # [3, 64] x_T
    t = process.timesteps[0]
    with torch.no_grad():
        eps = world.denoiser(x, t.expand(3)).sample
    abar = world.scheduler.alphas_cumprod[t]
    x0 = (x - (1 - abar).sqrt() * eps) / abar.sqrt()  # DDIM eq. 12's predicted x0
    assert steps[0]["previews"] == [data_url(r) for r in x0.clamp(-1, 1)]

    (cands,) = [e for e in events if e["type"] == "candidates"]
    assert [c["preview"] for c in cands["candidates"]] == steps[-1]["previews"]
    (score,) = [e for e in events if e["type"] == "score"]
    assert score["rows"] == [0, 1, 2] and score["scores"] == pytest.approx([c["reward"] for c in cands["candidates"]])
    best = max(cands["candidates"], key=lambda c: c["reward"])
    assert best["answer"] == final["steerable"]["images"][0]["answer"]


def test_fk_streams_its_resampling(served):
    """FK at budget 4: one select per resampling step the result logs, after that step's weighing, and the
    parents are not the identity at every one (multinomial resampling moved particles)."""
    events, final = streamed(served, {"prompt": "3", "seed": 0, "scaling": {"method": "fk", "budget": 4}})
    info = final["steerable"]["images"][0]["info"]
    assert info["resampled_at"] == [10, 20, 30, 40, 50]
    selects = [e for e in events if e["type"] == "select"]
    assert len(selects) == len(info["resampled_at"])
    assert all(len(e["parents"]) == 4 and all(0 <= p < 4 for p in e["parents"]) for e in selects)
    assert any(e["parents"] != [0, 1, 2, 3] for e in selects)
    # each select follows its step's score: step (index k), score of those rows, select
    kinds = [e["type"] for e in events if e["type"] in ("step", "score", "select")]
    assert kinds == ["step", "score", "select"] * 5
    steps = [e for e in events if e["type"] == "step"]
    assert [e["index"][0] for e in steps] == info["resampled_at"]
    (cands,) = [e for e in events if e["type"] == "candidates"]
    assert len(cands["info"]["ess"]) == 5  # the ESS at each weighing, for the page's chart


def test_a_request_over_the_nfe_cap_is_refused_before_the_stream(served):
    r = served.post(ROUTE, json={"prompt": "3", "stream": True, "scaling": {"method": "fk", "budget": 21}})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["param"] == "scaling.budget" and "--max-request-nfe of 1000" in err["message"]


def test_an_error_inside_the_run_is_the_error_body_then_done(served, monkeypatch):
    """The NFE guard firing mid-run (a cap lower than the up-front check allowed) ends the stream with the
    API's error body."""
    from steerable.serve import images

    real = images.NFEGuard.charge

    def tight(self, rows):
        self.cap = 100
        real(self, rows)

    monkeypatch.setattr(images.NFEGuard, "charge", tight)
    with served.stream(
        "POST", ROUTE, json={"prompt": "3", "stream": True, "scaling": {"method": "bon", "budget": 3}}
    ) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    err = json.loads(lines[-2][6:])["error"]
    assert err["param"] == "scaling.budget" and "max-request-nfe of 100" in err["message"]


def test_a_client_that_leaves_stops_the_run(serve_app, monkeypatch):
    """Over real HTTP: the run is held at its first step event; the client reads the init event and leaves;
    released, the run stops at its next event before any reward call, and the server serves the next request."""
    httpx = pytest.importorskip("httpx")
    from steerable.diffusion.worlds import load_world
    from steerable.serve import build, images

    held, release = threading.Event(), threading.Event()
    real = images.DiffusionShow.__call__

    def hold(self, process, state):
        if not held.is_set():
            held.set()
            release.wait(30)
        return real(self, process, state)

    monkeypatch.setattr(images.DiffusionShow, "__call__", hold)
    reward = load_world("builtin:digits").reward
    _, app = build("builtin:digits")
    s = serve_app(app)
    try:
        calls = reward.calls
        body = {"prompt": "3", "seed": 0, "stream": True, "scaling": {"method": "fk", "budget": 4}}
        with httpx.stream("POST", s.url + ROUTE, json=body, timeout=30) as r:
            lines = r.iter_lines()  # one iterator: dropping it would close the connection early
            first = next(line for line in lines if line)
            assert json.loads(first[6:])["event"]["type"] == "init"
            assert held.wait(30)
        deadline = time.time() + 10
        while 'steerable_cancelled_total{route="/v1/images/generations"} 1.0' not in httpx.get(s.url + "/metrics").text:
            assert time.time() < deadline, "the disconnect was not seen"
            time.sleep(0.05)
        release.set()
        r = httpx.post(s.url + ROUTE, json={**body, "stream": False}, timeout=30)
        assert r.status_code == 200 and r.json()["steerable"]["cost"]["reward_calls"] == 5
        assert reward.calls - calls == 5 + 1  # the second request's weighings and its score: the first stopped
    finally:
        release.set()
        s.close()


def test_the_hand_written_png_decodes_to_the_grey_levels_at_every_size():
    """encode_png (zlib, no PIL) against PIL's decoder: 8-bit grey, the sample's levels, upscaled in blocks."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from steerable.serve.images import grey, png

    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(0)) * 1.5
    for side in (8, 16, 256):
        for row, levels in zip(x, grey(x), strict=True):
            image = Image.open(io.BytesIO(base64.b64decode(png(row, side))))
            image.load()
            assert image.format == "PNG" and image.mode == "L" and image.size == (side, side)
            k = side // 8
            assert np.array_equal(np.asarray(image), levels.repeat(k, 0).repeat(k, 1))
    assert grey(torch.tensor([[1.0, -1.0, 0.0, 3.0] + [-1.0] * 60]))[0, 0, :4].tolist() == [0, 255, 128, 0]
