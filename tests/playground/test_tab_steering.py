"""The Steering tab in headless Chromium: base and steered side by side, a slider re-runs the steered side only."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("fastapi")

from steerable.serve.playground.lm import artifact_entry, lm_keys  # noqa: E402

browser = pytest.mark.slow  # end-to-end: a served model and a headless browser


@pytest.fixture(scope="module")
def controller(artifact, tmp_path_factory):
    """A controller trained for one epoch on the built-in model (about two seconds), saved."""
    from steerable.lm.local import LocalGenerator
    from steerable.steer.controller import ControllerConfig, train_controller
    from steerable.tasks.builtin.contrast import contrast_set

    gen = LocalGenerator.from_pretrained("builtin", device="cpu")
    harmful, benign = contrast_set("jailbreak")
    v = torch.randn(gen.model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    ctl = train_controller(gen.model, gen.tokenizer, harmful[:16], benign[:16], v, ControllerConfig(epochs=1))
    return ctl.save(tmp_path_factory.mktemp("ctl") / "ctl"), gen.model.config.num_hidden_layers


@pytest.fixture(scope="module")
def url(live_server, artifact, controller):
    with live_server("builtin", steer=[f"noise={artifact}", f"ctl={controller[0]}"]) as u:
        yield u


def test_each_artifact_gets_its_kinds_slider_range():
    from steerable.steer.artifact import SteeringVector

    vec = SteeringVector("mean", "add", {}, vector=torch.ones(4), strength=-2.0)
    assert artifact_entry("v", vec) == {"name": "v", "kind": "vector", "strength": -2.0, "range": [-6.0, 6.0],
                                        "per_layer_weights": False}  # fmt: skip
    ablate = SteeringVector("refusal", "ablate", {}, direction=torch.ones(4))
    assert artifact_entry("d", ablate)["range"] is None and artifact_entry("d", ablate)["kind"] == "direction"
    big = SteeringVector("mean", "add", {}, vector=torch.ones(4), strength=50.0)
    assert artifact_entry("b", big)["range"] == [-100.0, 100.0]  # the API's bound on a strength


def test_v1_playground_lists_ranges_methods_budgets_and_problems(url):
    import httpx

    from steerable.tasks.builtin.arithmetic import parse_problem

    info = httpx.get(url + "/v1/playground", timeout=30).json()
    arts = info["sliders"]
    assert sorted(arts) == [a["name"] for a in info["steering"]] == ["ctl", "noise"]
    assert arts["ctl"]["kind"] == "controller" and arts["ctl"]["per_layer_weights"] is True
    assert arts["ctl"]["range"] == [0.0, 3 * arts["ctl"]["strength"]]
    assert arts["noise"]["kind"] == "vector" and arts["noise"]["range"] == [-3.0, 3.0]
    methods = {m["name"]: m for m in info["scaling"]["methods"]}
    assert set(methods) == set(info["methods"]) and methods["pf"]["budget"] == 4 and methods["greedy"]["budget"] == 1
    assert methods["pf"]["scored"] and not methods["sc"]["scored"]
    assert info["builtin"] is True
    assert info["problems"] and all(parse_problem(p) is not None for p in info["problems"])


def test_lm_keys_off_the_builtin_model_have_no_problems():
    from steerable.serve.app import ServeConfig

    keys = lm_keys({}, ServeConfig(max_budget=2), builtin=False)
    assert keys["builtin"] is False and "problems" not in keys
    assert {m["name"]: m["budget"] for m in keys["scaling"]["methods"]}["pf"] == 2  # never over --max-budget


def texts(page) -> tuple[str, str]:
    return page.inner_text("#steering-base"), page.inner_text("#steering-steered")


@browser
def test_a_slider_moved_with_the_keyboard_reruns_the_steered_side_only(browser_page, url, controller, screenshot):
    page = browser_page
    posts: list[dict] = []
    page.on("request", lambda r: posts.append(json.loads(r.post_data)) if r.url.endswith("/v1/completions") else None)
    page.goto(url + "/playground")
    page.wait_for_selector("#steering-run")
    page.select_option("#steering-artifact", "noise")
    page.click("#steering-run")
    page.wait_for_function("document.getElementById('steering-steered').textContent.length > 0")
    base, steered = texts(page)
    assert [("steering" in p) for p in posts] == [False, True]  # base, then steered (noise at its strength 1)
    assert posts[0]["seed"] == posts[1]["seed"] == 0 and posts[0]["temperature"] == posts[1]["temperature"] == 0

    slider = page.get_by_label("noise (vector) strength")
    slider.focus()
    page.keyboard.press("End")  # the top of the range: 3 x the saved strength
    page.wait_for_function(f"document.getElementById('steering-steered').textContent !== {json.dumps(steered)}")
    assert page.inner_text("#steering-strength-1-value") == "3.00"
    new_base, new_steered = texts(page)
    assert new_base == base and new_steered != steered
    assert posts[-1]["steering"] == {"name": "noise", "strength": 3.0}
    assert sum("steering" not in p for p in posts) == 1  # the base side was not asked again

    # the controller: its per-layer weights for this prompt as a bar chart, one bar per layer
    page.get_by_label("ctl (controller) strength").focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("#steering-weights:not([hidden])")
    page.wait_for_function("document.getElementById('steering-weights').data !== undefined")
    bars = page.evaluate("document.getElementById('steering-weights').data[0].y.length")
    assert bars == controller[1]
    assert posts[-1]["steering"]["name"] == "ctl"
    page.uncheck("#steering-controller-on")
    page.wait_for_function("document.getElementById('steering-status').textContent.includes('not steered')")
    assert "steering" not in posts[-1]
    page.check("#steering-controller-on")
    page.wait_for_function("document.getElementById('steering-status').textContent.includes('steered with ctl')")
    assert page.is_hidden("#panel-steering [role=alert]")
    screenshot(page, "steering")  # docs/assets/playground/steering.png is a copy of one, made by hand
