"""The Control tab in headless Chromium on ``--model builtin:pointnav``: V-GPS drawn on the map as it runs."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("diffusers")

from fastapi.testclient import TestClient  # noqa: E402

browser = pytest.mark.slow  # end-to-end: a served world and a headless browser
# every Plotly.react on the map, recorded: how many path points, candidates and chosen points it drew
RECORD = """() => {
  window.drawn = [];
  const react = Plotly.react;
  Plotly.react = function (div, data, layout, config) {
    if (div.id === "control-map") {
      const points = (t) => t.x.filter((v) => v !== null).length;
      const paths = (t) => t.x.length ? t.x.filter((v) => v === null).length + 1 : 0;
      window.drawn.push({path: points(data[0]), candidates: paths(data[1]), chosen: points(data[2])});
    }
    return react.apply(this, arguments);
  };
}"""


@pytest.fixture(scope="module")
def world():
    from steerable.serve import build

    return build("builtin:pointnav", max_budget=16)


@pytest.fixture(scope="module")
def url(world, serve_app):
    s = serve_app(world[1])
    yield s.url
    s.close()


@pytest.fixture(scope="module")
def capped_url(serve_app):
    from steerable.serve import build

    s = serve_app(build("builtin:pointnav", max_request_env_steps=10, max_request_nfe=200)[1])
    yield s.url
    s.close()


def test_v1_playground_describes_the_control_server(world):
    body = TestClient(world[1]).get("/v1/playground").json()
    assert body["families"] == ["control"] and body["model"] == "builtin:pointnav"
    assert body["methods"] == ["base", "vgps", "rti", "dsrl", "search"]
    assert body["limits"]["max_budget"] == 16 and body["limits"]["max_request_env_steps"] == 4096
    control = body["control"]
    assert control["map"]["obstacles"][0] == [2.0, 0.0, 0.8] and control["max_steps"] == 100
    vgps = next(m for m in control["methods"] if m["name"] == "vgps")
    assert "K chunks" in vgps["budget"] and vgps["options"] == ["eta", "beta"]  # critic: a file, not offered


def open_tab(page, url: str) -> None:
    page.goto(url + "/playground")
    page.wait_for_selector("#control-run")
    page.wait_for_function("() => document.querySelector('#control-map .main-svg') !== null")


@browser
def test_vgps_is_drawn_as_it_runs_and_the_summary_shows_the_result(browser_page, url, screenshot):
    page = browser_page
    open_tab(page, url)
    assert page.get_attribute("#tab-control", "aria-selected") == "true"
    for id_ in ("control-method", "control-budget", "control-seed", "control-options", "control-replay"):
        assert page.locator(f"label[for={id_}]").count() == 1, id_
    page.evaluate(RECORD)
    page.select_option("#control-method", "vgps")
    page.fill("#control-budget", "4")
    page.fill("#control-seed", "3")
    page.focus("#control-seed")
    page.keyboard.press("Enter")  # the form runs from the keyboard
    page.wait_for_function("() => document.querySelector('#control-summary').textContent.startsWith('success')")
    drawn = page.evaluate("window.drawn")
    steps = [d for d in drawn if d["candidates"]]
    assert len(steps) >= 2 and all(d["candidates"] == 4 and d["chosen"] == 9 for d in steps)  # K = 4, H + 1 points
    lengths = [d["path"] for d in drawn]
    assert lengths == sorted(lengths) and lengths[-1] > steps[0]["path"] > 1  # the path grows step by step
    summary = page.inner_text("#control-summary")
    api = api_summary(url, {"method": "vgps", "budget": 4, "seed": 3})
    assert f"success: {'yes' if api['success'] else 'no'} ({api['outcome']})" in summary
    assert (
        f"return: {api['return']:.3f}" in summary
        and f"NFE: {api['nfe']} ({api['nfe_per_step']:.2f} per env step)" in summary
    )
    assert "4 candidates, chose #" in page.inner_text("#control-step")
    assert page.is_hidden("#panel-control-error")
    page.focus("#control-replay")  # replay from the keyboard: step 6 of the episode, its chunks and the path so far
    page.keyboard.press("Home")
    for _ in range(6):
        page.keyboard.press("ArrowRight")
    assert page.inner_text("#control-step").startswith("Step 6 (t = 24)")
    assert page.evaluate("window.drawn.at(-1)") == {"path": 25, "candidates": 4, "chosen": 9}
    screenshot(page, "control")  # docs/assets/playground/control.png is a copy of one


def api_summary(url: str, body: dict) -> dict:
    """The API's own answer to the request the tab made, for comparison."""
    import httpx

    return httpx.post(url + "/v1/control/episodes", json=body, timeout=60).json()


@browser
def test_rti_draws_its_warm_started_plan(browser_page, url):
    page = browser_page
    open_tab(page, url)
    page.select_option("#control-method", "rti")
    page.fill("#control-budget", "2")
    page.click("#control-run")
    page.wait_for_function("() => document.querySelector('#control-summary').textContent.startsWith('success')")
    plan = page.evaluate("document.getElementById('control-map').data[3].x.filter((v) => v !== null).length")
    assert plan == 9 and "warm-started plan drawn" in page.inner_text("#control-step")


@browser
def test_over_the_caps_the_tab_shows_the_apis_one_line_message(browser_page, capped_url):
    page = browser_page
    open_tab(page, capped_url)
    page.select_option("#control-method", "base")
    page.click("#control-run")
    alert = page.locator("#panel-control-error")
    alert.wait_for(state="visible")
    assert alert.inner_text().startswith("the episode passed the server's --max-request-env-steps of 10")
    assert page.evaluate("document.getElementById('control-map').data[0].x.length") == 9  # drawn until it stopped
    page.select_option("#control-method", "vgps")
    page.fill("#control-budget", "8")  # 3 predictions x 8 x 10 = 240 NFE at worst: refused before it starts
    page.click("#control-run")
    page.wait_for_function("() => document.querySelector('#panel-control-error').textContent.includes('240')")
    text = alert.inner_text()
    assert "over the server's --max-request-nfe of 200" in text and "\n" not in text
