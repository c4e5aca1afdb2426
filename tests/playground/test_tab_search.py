"""The Search tab in headless Chromium: a PF run drawn as its events arrive, the votes, the API's errors."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

browser = pytest.mark.slow  # end-to-end: a served model and a headless browser
PROMPT = "Q: 37+48-19=\n"


@pytest.fixture(scope="module")
def url(live_server):
    with live_server("builtin", max_budget=8) as u:
        yield u


def run(page, method: str, budget: int) -> None:
    page.select_option("#search-method", method)
    page.fill("#search-budget", str(budget))
    page.fill("#search-prompt", PROMPT)
    page.click("#search-run")
    page.wait_for_selector("#search-plot[data-done=true]")


def markers(page) -> list[tuple[int, int]]:
    """The (step, row) of every particle marker the chart holds."""
    trace = page.evaluate("document.getElementById('search-plot').data.find(t => t.name === 'particle')")
    return list(zip(trace["x"], trace["y"], strict=True))


@browser
def test_a_pf_run_draws_the_budgets_particles_and_its_resampling(browser_page, url, screenshot):
    page = browser_page
    page.goto(url + "/playground#search")
    page.wait_for_selector("#search-run")
    seen: list[int] = []  # markers drawn while the run was still going: the view follows the events
    page.expose_function("noteMarkers", lambda n: seen.append(n))
    page.evaluate(
        "new MutationObserver(() => noteMarkers(Number(document.getElementById('search-plot').dataset.markers)))"
        ".observe(document.getElementById('search-plot'), {attributes: true, attributeFilter: ['data-markers']})"
    )
    run(page, "pf", 4)
    assert page.is_hidden("#panel-search [role=alert]")
    assert page.get_attribute("#search-plot", "data-particles") == "4"
    drawn = markers(page)
    last = max(x for x, _ in drawn)
    assert sorted(y for x, y in drawn if x == last) == [0, 1, 2, 3]  # four particles at the last step
    assert sorted(y for x, y in drawn if x == 0) == [0, 1, 2, 3]  # every particle starts at the prompt, step 0
    assert {y for _, y in drawn} == {0, 1, 2, 3}
    edges = page.evaluate("document.getElementById('search-plot').data.find(t => t.name === 'selected from parent')")
    assert len([x for x in edges["x"] if x is not None]) >= 2  # at least one parent -> child line
    assert len(seen) >= 2 and seen == sorted(seen)  # drawn as events arrive, growing (a loaded browser may batch some)
    assert "Answer:" in page.inner_text("#search-answer")
    assert "(expected 66)" in page.inner_text("#search-correct")
    cost = page.inner_text("#search-cost")
    assert "tokens generated" in cost and "PRM calls" in cost and " s" in cost
    screenshot(page, "search")  # docs/assets/playground/search.png is a copy of one, made by hand


@browser
def test_a_beam_search_draws_its_beams_and_where_pruning_sent_them(browser_page, url):
    page = browser_page
    page.goto(url + "/playground#search")
    page.wait_for_selector("#search-run")
    run(page, "beam", 4)
    assert page.is_hidden("#panel-search [role=alert]")
    assert page.get_attribute("#search-plot", "data-particles") == "4"
    assert int(page.get_attribute("#search-plot", "data-resampled")) > 0  # a kept beam's children moved rows
    assert page.inner_text("#search-status") == "beam, budget 4: 4 particles at the last step"


@browser
def test_self_consistency_shows_its_votes(browser_page, url):
    page = browser_page
    page.goto(url + "/playground#search")
    page.wait_for_selector("#search-run")
    run(page, "sc", 5)
    page.wait_for_selector("#search-votes:not([hidden])")
    votes = page.evaluate("document.getElementById('search-votes').data[0].y")
    assert sum(votes) == 5  # one vote per sample
    assert page.get_attribute("#search-plot", "data-particles") == "5"


@browser
def test_an_over_budget_request_shows_the_apis_message(browser_page, url):
    page = browser_page
    page.goto(url + "/playground#search")
    page.wait_for_selector("#search-run")
    page.select_option("#search-method", "pf")
    page.fill("#search-budget", "9")
    page.click("#search-run")
    page.wait_for_selector("#panel-search [role=alert]:not([hidden])")
    assert page.inner_text("#panel-search [role=alert]") == "scaling.budget must be <= 8 (got 9)"
    assert page.is_enabled("#search-run")  # the tab stays usable
