"""The Diffusion tab on ``steerable serve --model builtin:digits``, in headless Chromium (and its info route)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("diffusers")
pytest.importorskip("sklearn")
from fastapi.testclient import TestClient  # noqa: E402

browser = pytest.mark.slow  # end-to-end: a served model and a headless browser
DOCS_SHOT = Path(__file__).parents[2] / "docs" / "assets" / "playground" / "diffusion.png"


@pytest.fixture(scope="module")
def digits_url(live_server):
    with live_server("builtin:digits") as url:
        yield url


@pytest.fixture(scope="module")
def tight_url(live_server):
    """A server whose --max-request-nfe of 150 affords 3 particles."""
    with live_server("builtin:digits", max_request_nfe=150) as url:
        yield url


def test_v1_playground_lists_the_diffusion_tabs_choices():
    from steerable.diffusion.registry import METHODS
    from steerable.serve import build

    _, app = build("builtin:digits", max_request_nfe=1000, max_budget=16)
    d = TestClient(app).get("/v1/playground").json()["diffusion"]
    assert [m["name"] for m in d["methods"]] == list(METHODS)
    assert {m["name"]: m["default_budget"] for m in d["methods"]}["fk"] == 4
    assert d["default"] == {"method": "fk", "budget": 4}
    assert d["targets"] == [str(i) for i in range(10)] and d["nfe_per_particle"] == 50
    assert d["max_budget"] == 16  # min(--max-budget 16, 1000 NFE // 50 per particle = 20)
    _, app = build("builtin:digits", max_request_nfe=150)
    d = TestClient(app).get("/v1/playground").json()["diffusion"]
    assert d["max_budget"] == 3 and d["default"]["budget"] == 3


def open_tab(page, url: str) -> None:
    page.goto(url + "/playground#diffusion")
    page.wait_for_selector("#diffusion-run")


def run_and_wait(page, button: str = "#diffusion-run") -> str:
    page.click(button)
    page.wait_for_function("['done', 'error'].includes(document.getElementById('diffusion-results').dataset.state)")
    return page.get_attribute("#diffusion-results", "data-state")


def response(page, url: str, method: str, budget: int, seed: int = 0, digit: str = "3") -> dict:
    """The API's own answer for what the page asked (same seed: the same run)."""
    import httpx

    body = {"prompt": digit, "seed": seed, "scaling": {"method": method, "budget": budget}}
    return httpx.post(url + "/v1/images/generations", json=body, timeout=60).json()["steerable"]


@browser
def test_fk_at_budget_4_draws_4_particles_and_its_resampling(browser_page, digits_url, screenshot):
    page = browser_page
    open_tab(page, digits_url)
    page.select_option("#diffusion-method", "fk")
    page.fill("#diffusion-budget", "4")
    page.fill("#diffusion-seed", "0")
    assert run_and_wait(page) == "done"
    strip = "#diffusion-particles-run"
    steps = page.eval_on_selector_all(f"{strip} .df-step", "cols => cols.map(c => c.querySelectorAll('img').length)")
    assert steps == [4, 4, 4, 4, 4]  # 4 particles at each of FK's weighings (steps 10, 20, 30, 40, 50)
    assert page.get_attribute(f"{strip} .df-step img", "alt") == "particle 0, step 10"
    api = response(page, digits_url, "fk", 4)
    resampled = api["images"][0]["info"]["resampled_at"]
    sel = page.eval_on_selector_all(f"{strip} .df-sel", "cols => cols.length")
    assert sel == len(resampled) == 5
    moved = page.eval_on_selector_all(f"{strip} .df-sel .resampled", "cells => cells.length")
    assert moved > 0 and page.get_attribute("#diffusion-view-run", "data-resampled") == "true"
    assert page.eval_on_selector_all("#diffusion-candidates-run .df-cand", "c => c.length") == 4
    assert page.eval_on_selector_all("#diffusion-candidates-run .df-cand.chosen", "c => c.length") == 1
    answer = page.inner_text("#diffusion-answer-run")
    assert f"{api['cost']['nfe']} NFE" in answer and f"reward {api['images'][0]['reward']:.2f}" in answer
    assert page.eval_on_selector("#diffusion-chart-run", "c => c.querySelectorAll('.scatterlayer .trace').length") == 2
    assert page.is_hidden("#panel-diffusion-error")
    shot = screenshot(page, "diffusion")
    if os.environ.get("STEERABLE_DOCS_SHOTS") == "1":  # the docs' copy is refreshed on request, never by a plain run
        shutil.copyfile(shot, DOCS_SHOT)


@browser
def test_best_of_n_vs_fk_shows_both_at_equal_nfe(browser_page, digits_url, screenshot):
    page = browser_page
    open_tab(page, digits_url)
    page.fill("#diffusion-budget", "3")
    assert run_and_wait(page, "#diffusion-compare") == "done"
    bon = page.eval_on_selector_all("#diffusion-particles-bon .df-step", "c => c.map(x => x.children.length - 1)")
    assert bon == [3] * 50  # best-of-N: every one of the 50 steps, no resampling
    assert page.eval_on_selector_all("#diffusion-particles-bon .df-sel", "c => c.length") == 0
    assert page.eval_on_selector_all("#diffusion-particles-fk .df-sel", "c => c.length") == 5
    assert page.get_attribute("#diffusion-view-bon", "data-nfe") == page.get_attribute("#diffusion-view-fk", "data-nfe")
    assert page.get_attribute("#diffusion-view-fk", "data-nfe") == "150"
    screenshot(page, "diffusion-compare")


@browser
def test_an_over_nfe_request_shows_the_apis_message(browser_page, tight_url):
    page = browser_page
    open_tab(page, tight_url)
    assert page.get_attribute("#diffusion-budget", "max") == "3"
    page.fill("#diffusion-budget", "4")
    assert run_and_wait(page) == "error"
    alert = page.inner_text("#panel-diffusion [role=alert]")
    assert alert == (
        "n x scaling.budget x 50 steps is 200 denoiser evaluations, over the server's --max-request-nfe of 150: "
        "lower n or scaling.budget"
    )
    page.fill("#diffusion-budget", "3")  # within the cap: the alert clears and the run draws
    assert run_and_wait(page) == "done" and page.is_hidden("#panel-diffusion [role=alert]")


@browser
def test_every_control_is_labelled_and_the_run_works_from_the_keyboard(browser_page, digits_url):
    page = browser_page
    open_tab(page, digits_url)
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('#panel-diffusion input, #panel-diffusion select')]
             .filter(e => !(e.labels && e.labels.length)).map(e => e.id)"""
    )
    assert unlabelled == []
    page.select_option("#diffusion-method", "bon")
    page.fill("#diffusion-budget", "2")
    page.focus("#diffusion-run")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('diffusion-results').dataset.state === 'done'")
    assert page.eval_on_selector_all("#diffusion-candidates-run .df-cand", "c => c.length") == 2
