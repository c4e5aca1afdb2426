"""``POST /v1/control/episodes`` on the shipped PointNav policy and critic, through FastAPI's TestClient."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("diffusers")

from fastapi.testclient import TestClient  # noqa: E402

ROUTE = "/v1/control/episodes"
TIMING = ("id", "created", "seconds")


def serve(model: str = "builtin:pointnav", **limits):
    from steerable.serve import build

    engine, app = build(model, **limits)
    return TestClient(app)


@pytest.fixture(scope="module")
def served():
    with serve() as client:
        yield client


def events(client, body: dict) -> list:
    """The SSE data lines of a streamed request, parsed (``[DONE]`` kept as the string)."""
    with client.stream("POST", ROUTE, json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def test_an_episode_is_episode_zero_of_control_eval(served):
    """Same seed, same episode as `steerable control eval --seed S` (run_block over one row)."""
    from steerable.control.evaluate import run_block
    from steerable.control.registry import EvalConfig, load_policy, make_controller
    from steerable.control.worlds.envs import make_env

    out = served.post(ROUTE, json={"method": "vgps", "budget": 4, "seed": 3}).json()
    cfg = EvalConfig(env="builtin:pointnav", method="vgps", budget=4)
    ep = run_block(make_env(cfg.env), make_controller(cfg, load_policy(cfg)), [0], 3, keep_path=True)[0]
    assert (out["success"], out["return"], out["steps"], out["outcome"]) == (ep.success, ep.ret, ep.steps, ep.outcome)
    assert (out["nfe"], out["scorer_calls"], out["predictions"]) == (ep.nfe, ep.scorer_calls, ep.predictions)
    assert out["nfe"] == 40 * out["predictions"]  # K = 4 chunks x 10 DDIM steps per control step
    np.testing.assert_allclose(out["path"], ep.path, atol=1e-4)
    assert out["nfe_per_step"] == round(ep.nfe / ep.steps, 3) and out["seed"] == 3


def test_the_streamed_summary_is_the_non_streamed_one_and_the_steps_draw_its_path(served):
    body = {"method": "vgps", "budget": 4, "seed": 5}
    plain = served.post(ROUTE, json=body).json()
    got = events(served, body)
    assert got[-1] == "[DONE]"
    summary = got[-2]
    assert {k: v for k, v in summary.items() if k not in TIMING} == {k: v for k, v in plain.items() if k not in TIMING}
    evs = [e["event"] for e in got[:-2]]
    assert all(e["object"] == "steerable.event" for e in got[:-2])
    assert evs[0]["type"] == "reset" and all(e["type"] == "env_step" for e in evs[1:])
    path = [evs[0]["pos"]] + [p for e in evs[1:] for p in e["positions"]]
    assert path == summary["path"]
    assert [e["t"] for e in evs[1:]] == np.cumsum([len(e["positions"]) for e in evs[1:]]).tolist()
    assert sum(e["nfe"] for e in evs[1:]) == summary["nfe"]
    assert evs[-1]["return"] == pytest.approx(summary["return"], abs=1e-4)
    m = evs[0]["map"]
    assert m["obstacles"] == [[2.0, 0.0, 0.8], [2.0, 2.05, 0.75], [2.0, -2.05, 0.75]] and m["regions"] == []


@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_vgps_steps_carry_k_scored_candidates_and_the_executed_one_is_chosen(beta):
    """The Watch-read scores are the critic's Q of the K chunks (VGPS.last_q); ``chosen`` is the chunk whose actions
    were executed: the argmax by default, the softmax draw with beta > 0."""
    from steerable.serve.episodes import ControlWorld, Guard, episode, planned_path

    world = ControlWorld.load("builtin:pointnav")
    controller = world.controller("vgps", 4, {"beta": beta})
    qs, executed, act = [], [], controller.act

    def recorded(rows, seen, envs):
        root = seen[0][-1]
        out = act(rows, seen, envs)
        qs.append(controller.last_q[0].tolist())
        executed.append(planned_path(world.env.config, root, out[0]))  # the executed actions from the same root
        return out

    controller.act = recorded
    evs = []
    episode(world, controller, 0, Guard(10**6, 10**6), evs.append)
    steps = evs[1:]
    assert len(steps) == len(qs) > 1
    prev = evs[0]["pos"]
    for e, q, done in zip(steps, qs, executed, strict=True):
        assert len(e["candidates"]) == 4 and all(len(c) == 9 for c in e["candidates"])  # H = 8 actions
        assert all(c[0] == prev for c in e["candidates"])  # planned from where the step started
        np.testing.assert_allclose(e["scores"], q, atol=1e-5)
        np.testing.assert_allclose(e["candidates"][e["chosen"]][: len(done)], done, atol=2e-4)
        prev = e["pos"]
    argmax = [e["chosen"] == int(np.argmax(e["scores"])) for e in steps]
    assert all(argmax) if beta == 0 else not all(argmax)  # seed 0 with beta 0.05 draws a non-argmax chunk
    assert len({tuple(map(tuple, c)) for c in steps[0]["candidates"]}) == 4  # four different chunks


def test_search_steps_carry_its_plans_of_two_chunks(served):
    """Lookahead (bon over depth-2 plans): each plan is 4 executed actions of its first chunk, then a whole chunk."""
    got = events(served, {"method": "search", "budget": 3, "seed": 0})
    steps = [e["event"] for e in got[:-2]][1:]
    assert all(len(e["candidates"]) == 3 for e in steps)
    assert {len(c) for c in steps[0]["candidates"]} == {4 + 8 + 1}  # (a plan whose fork ended has fewer)
    assert all(e["chosen"] == int(np.argmax(e["scores"])) for e in steps)
    assert got[-2]["fork_steps"] > 0


def test_rti_steps_carry_the_warm_started_plan(served):
    got = events(served, {"method": "rti", "budget": 2, "seed": 1})
    steps = [e["event"] for e in got[:-2]][1:]
    assert all(len(e["plan"]) == 9 and "candidates" not in e for e in steps)
    assert all(len(e["positions"]) == 1 for e in steps[:-1])  # one action executed per prediction
    assert steps[0]["nfe"] == 10 and {e["nfe"] for e in steps[1:]} == {2}  # cold, then K' = 2 warm steps
    assert steps[1]["plan"][0] == steps[0]["pos"]


def test_bad_method_budget_and_options_are_400s_naming_the_field(served):
    cases = [
        ({"method": "teleport"}, "method", "use one of base, vgps, rti, dsrl, search"),
        ({"method": "stl"}, "method", "STLNav"),  # a method of another world: says why
        ({"method": "vgps", "budget": 65}, "budget", "--max-budget"),
        ({"method": "vgps", "budget": 0}, "budget", ""),
        ({"method": "vgps", "options": {"critic": "/etc/passwd"}}, "options.critic", "never names a file"),
        ({"method": "vgps", "options": {"gamma": 1}}, "options", "no option gamma"),
        ({"method": "vgps", "options": {"beta": -1}}, "options", "beta"),
        ({"method": "vgps", "seed": -1}, "seed", ""),
    ]
    for body, param, words in cases:
        r = served.post(ROUTE, json=body)
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == param and words in err["message"], (body, err)
        assert "\n" not in err["message"]


def test_models_health_metrics():
    with serve(api_key="k") as client:
        assert client.get("/health").json()["status"] == "ok"
        assert client.get("/v1/models").status_code == 401
        assert client.post(ROUTE, json={"method": "base"}).status_code == 401
        head = {"Authorization": "Bearer k"}
        (model,) = client.get("/v1/models", headers=head).json()["data"]
        assert model["kind"] == "control" and model["methods"] == ["base", "dsrl", "rti", "search", "vgps"]
        assert client.post(ROUTE, json={"method": "base", "seed": 0}, headers=head).json()["nfe"] > 0
        assert "steerable_requests_total" in client.get("/metrics", headers=head).text


def test_the_nfe_cap_refuses_a_known_worst_case_and_stops_an_unknown_one():
    with serve(max_request_nfe=50) as client:
        r = client.post(ROUTE, json={"method": "vgps", "budget": 4})  # 25 steps x 4 x 10 = 1000 at worst
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == "budget" and err["code"] == "request_too_large"
        assert "may spend 1000 denoiser evaluations" in err["message"] and "--max-request-nfe of 50" in err["message"]
        body = {"method": "search", "budget": 2, "seed": 0}  # 2 plans x 2 chunks x 10 = 40 a step: stopped in the 2nd
        r = client.post(ROUTE, json=body)
        err = r.json()["error"]
        assert r.status_code == 400 and "needed more than the server's --max-request-nfe of 50" in err["message"]
        assert "(50 spent)" in err["message"]  # charged before each batched denoiser call: never past the cap
        got = events(client, body)
        assert got[-1] == "[DONE]" and got[-2]["error"]["message"] == err["message"]
        assert [e["event"]["type"] for e in got[:-2]] == ["reset", "env_step"]


def test_the_env_step_cap_stops_an_episode():
    with serve(max_request_env_steps=10) as client:
        r = client.post(ROUTE, json={"method": "base", "seed": 0})
        err = r.json()["error"]
        assert r.status_code == 400 and err["code"] == "request_too_large"
        assert "passed the server's --max-request-env-steps of 10" in err["message"] and "(10 taken" in err["message"]
        got = events(client, {"method": "base", "seed": 0})
        steps = [e["event"] for e in got[:-2] if e["event"]["type"] == "env_step"]
        assert len(steps) == 2 and steps[-1]["t"] == 8  # two chunks of 4 ran; the third stopped at its 3rd action
        assert got[-2]["error"]["message"] == err["message"] and got[-1] == "[DONE]"
        r = client.post(ROUTE, json={"method": "search", "budget": 2, "seed": 0})  # 2 plans x 8 fork steps
        assert r.status_code == 400 and r.json()["error"]["message"].startswith("a search's forks passed")


def test_stlnav_offers_its_task_methods_and_draws_region_a():
    with serve("builtin:stlnav") as client:
        (model,) = client.get("/v1/models").json()["data"]
        assert {"stl", "fk", "tgpo"} <= set(model["methods"])
        got = events(client, {"method": "stl", "budget": 2, "seed": 1})
        assert got[0]["event"]["map"]["regions"] == [{"name": "A", "x": 2.0, "y": 1.05, "r": 0.3, "by": 60}]
        assert isinstance(got[-2]["satisfied"], bool)
