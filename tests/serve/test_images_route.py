"""``POST /v1/images/generations`` on the shipped digits denoiser, through FastAPI's TestClient."""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("diffusers")
pytest.importorskip("sklearn")

from fastapi.testclient import TestClient  # noqa: E402

from steerable.errors import ConfigError, InputError  # noqa: E402

ROUTE = "/v1/images/generations"


@pytest.fixture(scope="module")
def served():
    from steerable.serve import build

    engine, app = build("builtin:digits", max_request_nfe=3000, max_n=8)
    with TestClient(app) as client:
        client.engine = engine
        yield client


def pixels(b64: str):
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG" and image.mode == "L"
    return image.size, torch.from_numpy(np.asarray(image).astype(np.int64)).flatten()


def test_png_is_dark_ink_on_white_pixel_for_pixel():
    from steerable.serve.images import png

    x = torch.full((64,), -1.0)
    x[0], x[1], x[2], x[63] = 1.0, 0.0, 3.0, -0.5  # ink, half, clamped to ink, a quarter
    size, px = pixels(png(x, 8))
    assert size == (8, 8)
    assert px[:3].tolist() == [0, 128, 0] and px[63] == 191 and px[3:63].eq(255).all()  # (1 - x) / 2 * 255
    size, big = pixels(png(x, 32))
    assert size == (32, 32)  # 4x4 blocks of the 8x8 grid
    assert big[0] == 0 and big[3 * 32 + 3] == 0 and big[4] == 128 and big[4 * 32] == 255


def test_each_image_is_the_seeded_run_of_diffuse_sample(served):
    """Image i is the strategy run with seed SEED + i; the verdict, reward and cost are that run's."""
    from steerable.diffusion.digits import judge
    from steerable.diffusion.registry import make_strategy
    from steerable.diffusion.worlds import load_world
    from steerable.serve.images import png

    r = served.post(ROUTE, json={"prompt": "7", "n": 2, "seed": 5, "scaling": {"method": "bon", "budget": 2}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["size"] == "8x8" and len(body["data"]) == 2
    world = load_world("builtin:digits")
    strategy = make_strategy("bon", judge().answer)
    for i, (item, meta) in enumerate(zip(body["data"], body["steerable"]["images"], strict=True)):
        res = strategy.run(world.process(), world.reward, 2, "7", seed=5 + i)
        assert item["b64_json"] == png(res.sample, 8)
        assert meta["answer"] == judge().answer(res.sample) and meta["success"] == (meta["answer"] == "7")
        assert meta["reward"] == pytest.approx(world.reward.score(["7"], res.sample[None])[0])
        assert meta["nfe"] == 100 and meta["reward_calls"] == 1
    assert body["data"][0]["b64_json"] != body["data"][1]["b64_json"]
    assert body["steerable"]["cost"]["nfe"] == 200


def test_default_is_fk_with_four_particles_and_the_seed_is_returned(served):
    r = served.post(ROUTE, json={"prompt": "3", "size": "16x16"})
    assert r.status_code == 200, r.text
    s = r.json()["steerable"]
    assert (s["method"], s["budget"]) == ("fk", 4)
    assert s["images"][0]["nfe"] == 200 and s["images"][0]["info"]["resamples"] == 5  # FK resampled: it fired
    assert pixels(r.json()["data"][0]["b64_json"])[0] == (16, 16)
    again = served.post(ROUTE, json={"prompt": "3", "size": "16x16", "seed": s["seed"]}).json()
    assert again["data"] == r.json()["data"]  # the returned seed reproduces the image


def test_options_reach_the_strategy(served):
    body = {"prompt": "1", "seed": 0, "scaling": {"method": "fk", "budget": 2, "options": {"lam": 2.5, "t_start": 20}}}
    info = served.post(ROUTE, json=body).json()["steerable"]["images"][0]["info"]
    assert info["lam"] == 2.5 and info["schedule"] == [20, 30, 40, 50]
    guided = {"prompt": "1", "seed": 0, "scaling": {"method": "dps", "budget": 1, "guidance_scale": 2.0}}
    meta = served.post(ROUTE, json=guided).json()["steerable"]["images"][0]
    assert meta["backward_passes"] > 0 and meta["nfe"] == 50


@pytest.mark.parametrize(
    "body, param",
    [
        ({"prompt": "x"}, "prompt"),
        ({"prompt": "12"}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "3", "n": 9}, "n"),
        ({"prompt": "3", "n": 0}, "n"),
        ({"prompt": "3", "size": "9x9"}, "size"),
        ({"prompt": "3", "size": "16x8"}, "size"),
        ({"prompt": "3", "size": "512x512"}, "size"),
        ({"prompt": "3", "size": "big"}, "size"),
        ({"prompt": "3", "response_format": "url"}, "response_format"),
        ({"prompt": "3", "output_format": "jpeg"}, "output_format"),
        ({"prompt": "3", "seed": -1}, "seed"),
        ({"prompt": "3", "seed": 1 << 53}, "seed"),
        ({"prompt": "3", "model": "gpt-image-1"}, "model"),
        ({"prompt": "3", "scaling": {"method": "nope"}}, "scaling.method"),
        ({"prompt": "3", "scaling": {"method": "fk", "budget": 0}}, "scaling.budget"),
        ({"prompt": "3", "scaling": {"method": "fk", "budget": 65}}, "scaling.budget"),
        ({"prompt": "3", "scaling": {"method": "fk", "options": {"lam": -1}}}, "scaling.options"),
        ({"prompt": "3", "scaling": {"method": "fk", "options": {"bogus": 1}}}, "scaling.options"),
        ({"prompt": "3", "scaling": {"method": "dts", "options": {"widen_alpha": 2}}}, "scaling.options"),
        ({"prompt": "3", "scaling": {"method": "fk", "guidance_scale": 2}}, "scaling.guidance_scale"),
        ({"prompt": "3", "scaling": {"method": "dps", "guidance_scale": -1}}, "scaling.guidance_scale"),
        ({"prompt": "3", "scaling": {"method": "fk", "scorer": "prm"}}, "scaling.scorer"),
        ({"prompt": "3", "scaling": {"method": "fk", "budget": 32}, "n": 2}, "scaling.budget"),  # 3,200 NFE
    ],
)
def test_every_bad_field_is_a_4xx_naming_it(served, body, param):
    r = served.post(ROUTE, json=body)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["param"] == param, r.json()


def test_the_nfe_cap_is_exact_up_front_and_inside_the_run():
    from steerable.diffusion.worlds import load_world
    from steerable.search.best_of_n import BestOfN
    from steerable.serve.images import GuardedDiffusion, NFEGuard
    from steerable.serve.openai import APIError
    from steerable.serve.scaling import Cancelled

    world = load_world("builtin:digits")

    def run(guard):
        process = GuardedDiffusion(world.denoiser, world.scheduler, guard=guard)
        return BestOfN().run(process, world.reward, 2, "3", seed=0)

    assert run(NFEGuard(100)).cost.nfe == 100  # two rows x 50 steps: exactly the cap
    with pytest.raises(APIError, match="max-request-nfe of 99") as e:
        run(NFEGuard(99))
    assert e.value.param == "scaling.budget"
    with pytest.raises(Cancelled):
        run(NFEGuard(10**6, cancelled=True))


def test_health_answers_while_the_worker_is_busy(served):
    """Image work runs on the engine thread: with the worker held, /health answers and the request waits."""
    from steerable.serve.engine import Job

    release = threading.Event()
    served.engine.submit(Job(lambda: release.wait(30), lambda *a: None))
    out = {}
    t = threading.Thread(target=lambda: out.update(r=served.post(ROUTE, json={"prompt": "4", "seed": 1})))
    t.start()
    try:
        deadline = time.time() + 20
        while served.engine.queue_depth < 1 and time.time() < deadline:
            time.sleep(0.01)
        health = served.get("/health")
        assert health.status_code == 200 and health.json()["queue_depth"] == 1
        assert "r" not in out  # the image waits behind the held worker
    finally:
        release.set()
    t.join(30)
    assert out["r"].status_code == 200


def test_the_official_client_gets_pngs(served):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=served)
    res = client.images.generate(
        model="builtin:digits",
        prompt="6",
        n=2,
        response_format="b64_json",
        extra_body={"seed": 2, "scaling": {"method": "fk", "budget": 2}},
    )
    assert [pixels(d.b64_json)[0] for d in res.data] == [(8, 8), (8, 8)]
    assert res.model_extra["steerable"]["cost"]["nfe"] == 200


def test_the_default_fits_the_server_caps():
    """Without scaling: FK with 4 particles, fewer where --max-request-nfe leaves fewer, refused where none fit."""
    from steerable.serve import build

    _, app = build("builtin:digits", max_request_nfe=150)
    with TestClient(app) as c:
        s = c.post(ROUTE, json={"prompt": "2", "seed": 0}).json()["steerable"]
        assert (s["method"], s["budget"], s["cost"]["nfe"]) == ("fk", 3, 150)
        r = c.post(ROUTE, json={"prompt": "2", "n": 4})  # one particle each is 200 NFE
        assert r.status_code == 400 and r.json()["error"]["code"] == "request_too_large"


def test_the_images_server_keeps_the_gate_and_only_its_routes():
    from steerable.serve import build

    _, app = build("builtin:digits", api_key="k")
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        assert c.post(ROUTE, json={"prompt": "3"}).status_code == 401
        auth = {"Authorization": "Bearer k"}
        assert c.post("/v1/completions", json={"prompt": "3"}, headers=auth).status_code == 404
        assert c.get("/v1/models", headers=auth).json()["data"][0]["id"] == "builtin:digits"


def test_what_cannot_be_served_is_refused_in_one_line():
    from steerable.serve import build

    with pytest.raises(ConfigError, match="2-D points, not images"):
        build("builtin:mixture")
    with pytest.raises(InputError, match="--steer"):
        build("builtin:digits", steer=["a=b"])
    with pytest.raises(InputError, match="--prm"):
        build("builtin:digits", prm="builtin")
    with pytest.raises(ConfigError, match="max_request_nfe"):
        build("builtin:digits", max_request_nfe=0)


def test_the_cli_wires_the_images_server(monkeypatch, capsys):
    """`steerable serve --model builtin:digits` builds the images app with --max-request-nfe (uvicorn stubbed)."""
    import uvicorn

    from steerable.cli import run

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app))
    assert run(["serve", "--model", "builtin:digits", "--max-request-nfe", "100"]) == 0
    with TestClient(served["app"]) as c:
        r = c.post(ROUTE, json={"prompt": "3", "scaling": {"method": "bon", "budget": 3}})
        assert r.status_code == 400 and "--max-request-nfe of 100" in r.json()["error"]["message"]
    assert run(["serve", "--model", "builtin:mixture"]) == 2
    assert run(["serve", "--model", "builtin:digits", "--max-request-nfe", "0"]) == 2
    err = capsys.readouterr().err
    assert "2-D points, not images" in err and "max-request-nfe" in err


def test_a_client_that_leaves_cancels_its_images(serve_app):
    """Over real HTTP: a request queued behind a held worker whose client times out is dropped, not run."""
    httpx = pytest.importorskip("httpx")
    from steerable.diffusion.worlds import load_world
    from steerable.serve import build
    from steerable.serve.engine import Job

    engine, app = build("builtin:digits")
    s = serve_app(app)
    release = threading.Event()
    try:
        engine.submit(Job(lambda: release.wait(30), lambda *a: None))
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(s.url + ROUTE, json={"prompt": "3"}, timeout=1.0)
        deadline = time.time() + 10
        while 'steerable_cancelled_total{route="/v1/images/generations"} 1.0' not in httpx.get(s.url + "/metrics").text:
            assert time.time() < deadline, "the disconnect was not seen"
            time.sleep(0.05)
        reward = load_world("builtin:digits").reward
        calls = reward.calls
        release.set()
        r = httpx.post(s.url + ROUTE, json={"prompt": "3", "seed": 0}, timeout=30)
        assert r.status_code == 200 and r.json()["steerable"]["cost"]["nfe"] == 200
        assert reward.calls - calls == 5 + 1  # this request's FK weighings and its score: the left one never ran
    finally:
        release.set()
        s.close()
