"""The playground's fixtures: a live server, a headless Chromium page, screenshots.

The browser tests drive Debian's ``chromium`` (``/usr/bin/chromium``, or ``$STEERABLE_CHROMIUM``) through
Playwright's ``executable_path``: Playwright's own browser download needs the network. Without chromium,
Playwright or plotly they skip with one line, except under ``STEERABLE_BROWSER_TESTS=1`` (``.ci/run`` sets it),
where a missing browser fails them. Tests that need no browser (the routes through a TestClient) always run.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).parent / "artifacts"


def chromium_path() -> str | None:
    path = os.environ.get("STEERABLE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(model: str = "builtin", **serve_kwargs):
    """``steerable serve --model MODEL`` in a thread on a free port of 127.0.0.1: yields the base URL."""
    uvicorn = pytest.importorskip("uvicorn")
    from steerable.serve import build

    serve_kwargs.setdefault("device", "cpu")
    engine, app = build(model, **serve_kwargs)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError(f"the {model} server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def live_server():
    """``with live_server("builtin", api_key="k") as url:``: a served model for the length of the block
    (a module-scoped fixture of the test file holds it open for the module)."""
    return serve


@pytest.fixture(scope="session")
def _browser():
    required = os.environ.get("STEERABLE_BROWSER_TESTS") == "1"
    missing = None
    path = chromium_path()
    if path is None:
        where = os.environ.get("STEERABLE_CHROMIUM") or "/usr/bin/chromium"
        missing = f"no chromium at {where} (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed (pip install playwright)"
    if missing is None:
        from steerable.serve.playground import PLOTLY_MISSING, plotly_js

        if plotly_js() is None:
            missing = PLOTLY_MISSING
    if missing is not None:
        if required:
            pytest.fail(f"browser tests required (STEERABLE_BROWSER_TESTS=1) but {missing}", pytrace=False)
        pytest.skip(f"browser tests: {missing}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI and containers run as root, where chromium's sandbox refuses to start
        browser = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def browser_page(_browser):
    """A fresh Playwright page (its own context: empty sessionStorage) on headless chromium."""
    context = _browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshot():
    """``screenshot(page, NAME)`` saves ``tests/playground/artifacts/NAME.png`` (git-ignored) and returns its path."""

    def take(page, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
