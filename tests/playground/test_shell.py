"""The playground's shell: its routes (through a TestClient) and the page itself in headless Chromium.

The tab files are replaced by test doubles (one tab per family, each with a labelled input) where a test is about
the shell's tabs, so these tests pin the shell alone; the label test reads the real page, tabs included.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from steerable.serve import playground  # noqa: E402

KEY = "sesame"
WRONG_KEY = "missing or wrong API key: send 'Authorization: Bearer KEY'"
FAMILIES = ("steering", "search", "diffusion", "control")
browser = pytest.mark.slow  # end-to-end: a served model and a headless browser


@pytest.fixture(scope="module")
def lm(artifact):
    """The built-in LM with a key, one steering vector and limits of its own: (engine, app)."""
    from steerable.serve import build

    return build(
        "builtin", [f"noise={artifact}"], device="cpu", api_key=KEY, max_budget=7, max_tokens=99,
        max_request_tokens=1234,
    )  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("diffusers")
    pytest.importorskip("sklearn")
    from steerable.serve import build

    return build("builtin:digits", device="cpu", max_request_nfe=4321)


@pytest.fixture(scope="module")
def lm_url(lm, serve_app):
    s = serve_app(lm[1])
    yield s.url
    s.close()


@pytest.fixture(scope="module")
def digits_url(digits, serve_app):
    s = serve_app(digits[1])
    yield s.url
    s.close()


# ---- the routes, without a browser ------------------------------------------------------------------------


def test_page_and_its_files_are_public_but_v1_playground_needs_the_key(lm):
    c = TestClient(lm[1])
    page = c.get("/playground")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'role="tablist"' in page.text and '<label for="api-key">API key</label>' in page.text
    for name in ("playground.js", "playground.css", "tab_steering.js", "tab_search.js", "tab_diffusion.js"):
        assert c.get(f"/playground/static/{name}").status_code == 200, name
    assert c.get("/playground/static/playground.js").headers["content-type"].startswith("text/javascript")
    assert c.get("/playground/static/playground.css").headers["content-type"].startswith("text/css")
    refused = c.get("/v1/playground")
    assert refused.status_code == 401 and refused.json()["error"]["message"] == WRONG_KEY
    assert c.get("/v1/playground", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.get("/v1/playground", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert c.get("/v1/models").status_code == 401  # the rest of the API keeps its key


def test_every_file_the_page_loads_is_served(lm):
    c = TestClient(lm[1])
    html = c.get("/playground").text
    paths = re.findall(r'(?:src|href)="(/playground/static/[^"]+)"', html)
    assert "/playground/static/plotly.min.js" in paths and len(paths) == 7  # css, shell, plotly, four tabs
    for path in paths:
        assert c.get(path).status_code == 200, path


def test_unknown_static_names_are_404_not_files_from_elsewhere(lm):
    c = TestClient(lm[1])
    for name in ("nope.js", "__init__.py", "index.htm"):
        r = c.get(f"/playground/static/{name}")
        assert r.status_code == 404 and r.json()["error"]["message"] == f"no playground file {name!r}"
    for name in ("..%2F__init__.py", "%2E%2E%2Fgate.py", "..%2F..%2Fapp.py"):  # a path, not a name: no route
        r = c.get(f"/playground/static/{name}")
        assert r.status_code == 401 and "error" in r.json(), name  # unknown paths meet the key first


def test_v1_playground_describes_the_lm_server(lm):
    engine, app = lm
    info = TestClient(app).get("/v1/playground", headers={"Authorization": f"Bearer {KEY}"}).json()
    from steerable.search.registry import METHODS

    assert info["model"] == "builtin"
    assert info["families"] == ["steering", "search"]
    assert info["steering"] == [{"name": "noise", "kind": "vector", "strength": 1.0}]
    assert info["methods"] == sorted(METHODS.entries) and "pf" in info["methods"]
    assert info["limits"] == {
        "max_budget": 7,
        "max_tokens": 99,
        "max_request_tokens": 1234,
        "max_request_nfe": 25_600,
        "max_request_env_steps": 4096,
    }
    assert info["key_required"] is True
    assert info["scorers"] == ["oracle"]


def test_v1_playground_describes_the_images_server(digits):
    info = TestClient(digits[1]).get("/v1/playground").json()
    assert info["model"] == "builtin:digits" and info["families"] == ["diffusion"]
    assert {"bon", "fk"} <= set(info["methods"]) and info["steering"] == []
    assert info["limits"]["max_request_nfe"] == 4321 and info["key_required"] is False


def test_without_plotly_the_page_is_a_404_with_the_install_line(lm, monkeypatch):
    monkeypatch.setattr(playground, "plotly_js", lambda: None)
    c = TestClient(lm[1])
    for path in ("/playground", "/playground/static/plotly.min.js"):
        r = c.get(path)
        assert r.status_code == 404
        assert r.json()["error"]["message"] == "the playground needs plotly: pip install 'steerable[playground]'"
    assert c.get("/playground/static/playground.js").status_code == 200  # the rest is plain files


def test_steering_entry_names_each_artifact_kind():
    from types import SimpleNamespace

    from steerable.steer.artifact import SteeringVector

    ablate = SteeringVector("refusal", "ablate", {}, direction=None, strength=1.0)
    assert playground.steering_entry("r", ablate) == {"name": "r", "kind": "direction", "strength": 1.0}
    add = SteeringVector("mean", "add", {}, strength=2.5)
    assert playground.steering_entry("v", add) == {"name": "v", "kind": "vector", "strength": 2.5}

    class Controller(SimpleNamespace):
        pass

    class Rice(SimpleNamespace):
        pass

    ctl = Controller(config=SimpleNamespace(alpha=3.0))
    assert playground.steering_entry("c", ctl) == {"name": "c", "kind": "controller", "strength": 3.0}
    assert playground.steering_entry("x", Rice(beta=0.5)) == {"name": "x", "kind": "rice", "strength": 0.5}


@pytest.mark.parametrize("plotly", [True, False])
def test_serve_prints_the_playground_address_beside_the_apis(plotly, monkeypatch, capsys):
    import uvicorn

    import steerable.serve
    from steerable.cli import run as main

    monkeypatch.setattr(steerable.serve, "build", lambda *a, **k: (None, "app"))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    if not plotly:
        monkeypatch.setattr(playground, "plotly_js", lambda: None)
    assert main(["serve", "--port", "8123"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "serving builtin on http://127.0.0.1:8123/v1" in err
    page = "http://127.0.0.1:8123/playground" if plotly else f"off ({playground.PLOTLY_MISSING})"
    assert f"playground: {page}" in err


# ---- the page in a browser ---------------------------------------------------------------------------------


def fake_tabs(page, plotly: bool = False) -> None:
    """Each tab_*.js answers with a tab of its family holding one labelled input (``FAMILY-probe``); unless
    ``plotly``, plotly.min.js is a stub (the shell never calls it, and parsing 4.8 MB costs seconds a page here)."""

    def fulfill(route):
        family = route.request.url.rsplit("tab_", 1)[1].removesuffix(".js")
        body = f"{{ const f = {json.dumps(family)};" + (
            "Playground.registerTab({id: f, label: f, family: f, render(panel, config) {"
            "  panel.innerHTML = '<label for=\"' + f + '-probe\">probe</label><input id=\"' + f + '-probe\">';"
            "  panel.dataset.methods = config.methods.length; }}); }"
        )
        route.fulfill(status=200, content_type="text/javascript", body=body)

    page.route(re.compile(r".*/playground/static/tab_\w+\.js$"), fulfill)
    if not plotly:
        stub = "window.Plotly = {stub: true};"
        page.route(re.compile(r".*/plotly\.min\.js$"), lambda r: r.fulfill(content_type="text/javascript", body=stub))


def connect(page, url: str, key: str | None) -> None:
    page.goto(url + "/playground")
    if key is not None:
        page.fill("#api-key", key)
        page.click("#api-key-save")


def tab_ids(page) -> list[str]:
    return page.eval_on_selector_all("[role=tab]", "els => els.map(e => e.id)")


@browser
def test_lm_page_shows_the_steering_and_search_tabs(browser_page, lm_url, screenshot):
    page = browser_page
    fake_tabs(page)
    connect(page, lm_url, KEY)
    page.wait_for_selector("#tab-steering")
    assert tab_ids(page) == ["tab-steering", "tab-search"]
    assert page.inner_text("#model-name") == "builtin"
    assert page.get_attribute("#tab-steering", "aria-selected") == "true"
    assert page.is_visible("#steering-probe") and not page.is_visible("#search-probe")
    assert page.get_attribute("#panel-search", "data-methods") == str(len(page.evaluate("Playground.config.methods")))
    assert page.is_hidden("#page-error")
    screenshot(page, "shell-lm")


@browser
def test_digits_page_shows_only_the_diffusion_tab(browser_page, digits_url):
    page = browser_page
    fake_tabs(page, plotly=True)
    connect(page, digits_url, None)
    page.wait_for_selector("#tab-diffusion")
    assert tab_ids(page) == ["tab-diffusion"]
    assert page.inner_text("#model-name") == "builtin:digits"
    assert page.evaluate("typeof Playground.plotly.newPlot") == "function"


@browser
def test_arrow_keys_home_and_end_move_between_tabs(browser_page, lm_url):
    page = browser_page
    fake_tabs(page)
    connect(page, lm_url, KEY)
    page.focus("#tab-steering")

    def selected() -> tuple[str, str, bool]:
        sel = page.eval_on_selector("[role=tab][aria-selected=true]", "e => e.id")
        focused = page.evaluate("document.activeElement.id")
        return sel, focused, page.is_visible("#panel-" + sel.removeprefix("tab-"))

    page.keyboard.press("ArrowRight")
    assert selected() == ("tab-search", "tab-search", True) and page.is_hidden("#panel-steering")
    page.keyboard.press("ArrowRight")  # wraps around
    assert selected() == ("tab-steering", "tab-steering", True)
    page.keyboard.press("ArrowLeft")
    assert selected() == ("tab-search", "tab-search", True)
    page.keyboard.press("Home")
    assert selected() == ("tab-steering", "tab-steering", True)
    page.keyboard.press("End")
    assert selected() == ("tab-search", "tab-search", True)
    # one tab stop for the tablist: only the selected tab is in the tab order
    assert page.eval_on_selector_all("[role=tab]", "els => els.map(e => e.tabIndex)") == [-1, 0]
    page.keyboard.press("Tab")  # from the tab into its panel
    assert page.evaluate("document.activeElement.id") == "panel-search"


@browser
@pytest.mark.parametrize("server", ["lm_url", "digits_url"])
def test_every_input_on_the_real_page_has_a_label(browser_page, server, request):
    page = browser_page
    connect(page, request.getfixturevalue(server), KEY if server == "lm_url" else None)
    page.wait_for_function("Playground.config !== null")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
             .filter(e => e.type !== 'hidden')
             .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                          && !e.getAttribute('aria-labelledby'))
             .map(e => e.id || e.outerHTML)"""
    )
    assert unlabelled == []
    assert page.evaluate("document.getElementById('api-key').labels[0].textContent") == "API key"
    actions = page.evaluate("[...document.querySelectorAll('[onclick], a:not([href])')].length")
    assert actions == 0  # every action is a <button>


@browser
def test_missing_or_wrong_key_shows_the_apis_message_then_the_right_key_connects(browser_page, lm_url, screenshot):
    page = browser_page
    fake_tabs(page)
    connect(page, lm_url, None)
    page.wait_for_selector("#page-error:not([hidden])")
    text = page.inner_text("#page-error")
    assert text.startswith(WRONG_KEY) and "Enter the server's API key above" in text
    assert page.get_attribute("#page-error", "role") == "alert"
    assert page.evaluate("document.activeElement.id") == "api-key"
    assert tab_ids(page) == []
    screenshot(page, "shell-no-key")
    page.fill("#api-key", "not-" + KEY)
    page.click("#api-key-save")
    page.wait_for_function("document.getElementById('page-error').textContent.includes('Bearer')")
    assert page.inner_text("#page-error").startswith(WRONG_KEY)
    page.fill("#api-key", KEY)
    page.keyboard.press("Enter")  # the key field submits its form
    page.wait_for_selector("#tab-steering")
    assert page.is_hidden("#page-error") and page.inner_text("#model-name") == "builtin"
    page.reload()  # the key stays for the session
    page.wait_for_selector("#tab-steering")
    assert page.input_value("#api-key") == KEY


@browser
def test_api_rejects_with_the_apis_one_line_message(browser_page, lm_url):
    page = browser_page
    fake_tabs(page)
    connect(page, lm_url, KEY)
    page.wait_for_function("Playground.config !== null")
    message = page.evaluate(
        """async () => { try { await Playground.api('/v1/completions', {prompt: 'x', max_tokens: 100000});
                               return 'resolved'; } catch (e) { return e.message; } }"""
    )
    assert message.startswith("max_tokens") and "99" in message and "\n" not in message
    shown = page.evaluate(
        """async () => { const panel = document.getElementById('panel-search');
                         try { await Playground.stream('/v1/completions', {prompt: 'x', max_tokens: 100000}); }
                         catch (e) { Playground.showError(panel, e.message); }
                         return document.getElementById('panel-search-error').textContent; }"""
    )
    assert shown == message
    page.click("#tab-search")
    assert page.is_visible("#panel-search-error")
    page.evaluate("Playground.clearError(document.getElementById('panel-search'))")
    assert page.is_hidden("#panel-search-error")


@browser
def test_stream_reads_the_servers_own_sse(browser_page, lm_url):
    page = browser_page
    fake_tabs(page)
    connect(page, lm_url, KEY)
    page.wait_for_function("Playground.config !== null")
    final = page.evaluate(
        """async () => { const events = [], chunks = [];
             const last = await Playground.stream('/v1/completions', {prompt: '12+7=', max_tokens: 4,
                                                   temperature: 0}, e => events.push(e), d => chunks.push(d));
             return {events: events.length, object: last.object, chunks: chunks.map(c => c.choices[0].text),
                     last: chunks[chunks.length - 1] === last}; }"""
    )
    assert final["events"] == 0 and final["object"] == "text_completion" and final["last"]
    assert len(final["chunks"]) >= 2  # the text arrives piece by piece, as a client reading the stream sees it
    expected = httpx.post(
        lm_url + "/v1/completions",
        json={"prompt": "12+7=", "max_tokens": 4, "temperature": 0},
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()["choices"][0]["text"]
    assert "".join(final["chunks"]) == expected


SSE = (
    'data: {"object": "steerable.event", "event": {"type": "init", "rows": 2}}\n\n'
    'data: {"object": "steerable.event", "event": {"type": "step", "step": 0, "previews": ["a", "b"]}}\r\n\r\n'
    'data: {"object": "text_completion", "choices": [{"text": "42"}]}\n\n'
    "data: [DONE]\n\n"
)
SSE_ERROR = (
    'data: {"object": "steerable.event", "event": {"type": "init", "rows": 2}}\n\n'
    'data: {"error": {"message": "the run needed more than 10 tokens", "type": "invalid_request_error"}}\n\n'
    "data: [DONE]\n\n"
)


@browser
def test_stream_hands_events_over_and_resolves_or_rejects_on_the_last_object(browser_page, lm_url):
    page = browser_page
    fake_tabs(page)
    bodies = {"ok": SSE, "bad": SSE_ERROR, "garbled": "data: {not json\n\n"}
    page.route(
        re.compile(r".*/v1/fake-(ok|bad|garbled)$"),
        lambda route: route.fulfill(
            status=200, content_type="text/event-stream", body=bodies[route.request.url.rsplit("-", 1)[1]]
        ),
    )
    connect(page, lm_url, KEY)
    page.wait_for_function("Playground.config !== null")
    run = """async (path) => { const events = [], data = [];
               try { const last = await Playground.stream(path, {x: 1}, e => events.push(e), d => data.push(d));
                     return {events, last, data}; }
               catch (e) { return {events, error: e.message}; } }"""
    ok = page.evaluate(run, "/v1/fake-ok")
    assert ok["events"] == [{"type": "init", "rows": 2}, {"type": "step", "step": 0, "previews": ["a", "b"]}]
    assert ok["last"] == {"object": "text_completion", "choices": [{"text": "42"}]} and ok["data"] == [ok["last"]]
    bad = page.evaluate(run, "/v1/fake-bad")
    assert bad == {"events": [{"type": "init", "rows": 2}], "error": "the run needed more than 10 tokens"}
    garbled = page.evaluate(run, "/v1/fake-garbled")
    assert garbled == {"events": [], "error": "the server sent an event that is not JSON: {not json"}
    cancelled = page.evaluate(
        """async () => { const c = new AbortController(); c.abort(); const names = [];
             for (const call of [() => Playground.api('/v1/playground', undefined, {signal: c.signal}),
                                 () => Playground.stream('/v1/fake-ok', {}, null, null, {signal: c.signal})]) {
               try { await call(); names.push('resolved'); } catch (e) { names.push(e.name); } }
             return names; }"""
    )
    assert cancelled == ["AbortError", "AbortError"]
