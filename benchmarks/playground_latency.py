"""Does the playground answer as fast as the API it calls? Time to the first event and first particles, page vs API.

Starts ``steerable serve --model builtin`` as its own process (the browser and the clients must not share its
GIL), waits for ``/health``, then alternates, run by run, the same streamed search request
(``POST /v1/completions`` with ``scaling`` and ``"stream": true``, a particle filter by default) made two ways:

- **API**: one httpx client (kept alive, as the browser keeps its connection) reading the server-sent events;
  the clock stops at the first ``steerable.event`` line, at the first ``step`` event (the first particles'
  previews: the issue's "time to first particle") and at the last byte.
- **page**: the playground page open in headless Chromium (Debian's ``/usr/bin/chromium``, driven by
  Playwright), calling ``Playground.stream`` as the search tab does; the clock (the page's ``performance.now``)
  stops when its ``onEvent`` first fires, first gets a ``step`` and when the promise resolves. The page is
  loaded once, before timing.
- **drawn** (only with ``--drawn SELECTOR``): a click on the search tab's ``#search-run`` to the first element
  matching SELECTOR in the page (the tab's first drawn particle, which the tab must clear in its click handler),
  seen by a MutationObserver; the next run waits for ``#search-run`` to be enabled again.

Prints mean and standard error per way (seconds), and the page's mean over the API's. Until the server streams
search runs it prints that the stream endpoint does not exist yet and exits 1. ``--plain`` times a plain
streamed completion instead (no ``scaling``; the clock stops at the first chunk), which streams today.

    python benchmarks/playground_latency.py [--runs 10] [--method pf] [--budget 4] [--port 8932] [--drawn SELECTOR]
    python benchmarks/playground_latency.py --plain --runs 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import wait_until_up

PROMPT = "Q: 37+48-19=\n"
PATH = "/v1/completions"
CHROMIUM = os.environ.get("STEERABLE_CHROMIUM", "/usr/bin/chromium")


def body(args, seed: int) -> dict:
    out = {"prompt": PROMPT, "max_tokens": 64, "temperature": 0.8, "seed": seed, "stream": True}
    if not args.plain:
        out["scaling"] = {"method": args.method, "budget": args.budget}
    return out


def api_run(client, url: str, payload: dict) -> tuple[float, float | None, float]:
    """Seconds to the first ``steerable.event`` (with ``scaling``; else the first chunk), to the first ``step``
    event (the first particles' previews; None without one) and to the end of the stream, read as a client
    reads it."""
    marker = '"steerable.event"' if "scaling" in payload else '"text_completion"'
    t0 = time.perf_counter()
    first = step = None
    with client.stream("POST", url + PATH, json=payload, timeout=300) as r:
        if r.status_code != 200 or not r.headers.get("content-type", "").startswith("text/event-stream"):
            r.read()
            raise NoStream(r.status_code, r.text)
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            if first is None and marker in line:
                first = time.perf_counter() - t0
            if step is None and '"steerable.event"' in line and json.loads(line[5:])["event"]["type"] == "step":
                step = time.perf_counter() - t0
    total = time.perf_counter() - t0
    if first is None:
        raise NoStream(200, "the stream carried no steerable.event: the run's progress is not streamed")
    return first, step, total


PAGE_RUN = """async ([path, payload]) => {
  let first = null, step = null;
  const t0 = performance.now();
  const mark = (e) => {
    const now = performance.now() - t0;
    if (first === null) first = now;
    if (step === null && e && e.type === 'step') step = now;
  };
  await Playground.stream(path, payload, mark, payload.scaling ? undefined : mark);
  const s = (ms) => (ms === null ? null : ms / 1000);
  return [s(first), s(step), (performance.now() - t0) / 1000];
}"""

DRAWN_RUN = """async (selector) => {
  const t0 = performance.now();
  document.getElementById('search-run').click();  // the tab clears its view before its first await
  const ms = await new Promise((resolve) => {
    const look = () => document.querySelector(selector) && (resolve(performance.now() - t0), true);
    if (look()) return;
    const watch = new MutationObserver(() => look() && watch.disconnect());
    watch.observe(document.body, {subtree: true, childList: true, attributes: true});
  });
  return ms / 1000;
}"""


class NoStream(Exception):
    def __init__(self, status: int, text: str):
        with contextlib.suppress(ValueError, KeyError, TypeError):  # the API's one-line message when it has one
            text = json.loads(text)["error"]["message"]
        super().__init__(f"{status}: {text}")


def mean_se(xs: list[float]) -> str:
    se = statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan")
    return f"{statistics.fmean(xs):.3f} ± {se:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10, help="Timed runs per way (after one warm-up each).")
    ap.add_argument("--method", default="pf", help="The scaling method the search tab runs.")
    ap.add_argument("--budget", type=int, default=4)
    ap.add_argument("--port", type=int, default=8932)
    ap.add_argument("--drawn", default=None, help="CSS selector of the search tab's first drawn particle.")
    ap.add_argument(
        "--plain", action="store_true", help="A plain streamed completion (no scaling): the first chunk's latency."
    )
    args = ap.parse_args()
    import httpx
    from playwright.sync_api import sync_playwright

    url = f"http://127.0.0.1:{args.port}"
    exe = Path(sys.executable).parent / "steerable"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    server = subprocess.Popen([str(exe), "serve", "--port", str(args.port)], env=env, stderr=subprocess.DEVNULL)
    # one client, kept alive between runs as the browser keeps its connection (a new httpx client per request
    # pays for its own setup, tens of ms, which is not the server's latency)
    client = httpx.Client()
    ways = ("api first", "api step", "api total", "page first", "page step", "page total", "drawn")
    rows: dict[str, list[float]] = {k: [] for k in ways}
    try:
        wait_until_up(url, server)
        try:
            api_run(client, url, body(args, 0))  # warm-up, and the check that the stream exists
        except NoStream as e:
            print(f"the search stream ({PATH} with scaling and stream: true) does not exist yet: {e}")
            print("nothing measured: rerun once the server streams search runs (--plain times a plain stream)")
            raise SystemExit(1) from None
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(url + "/playground")
            page.wait_for_function("window.Playground && Playground.config !== null")
            page.evaluate(PAGE_RUN, [PATH, body(args, 0)])  # warm-up
            if args.drawn:  # the tab runs its own form's request (its defaults), drawn where the user looks
                page.click("#tab-search")
            for i in range(1, args.runs + 1):
                for way, (first, step, total) in (
                    ("api", api_run(client, url, body(args, i))),
                    ("page", page.evaluate(PAGE_RUN, [PATH, body(args, i)])),
                ):
                    rows[f"{way} first"].append(first)
                    rows[f"{way} total"].append(total)
                    if step is not None:
                        rows[f"{way} step"].append(step)
                if args.drawn:
                    rows["drawn"].append(page.evaluate(DRAWN_RUN, args.drawn))
                    page.wait_for_function("!document.getElementById('search-run').disabled", timeout=300_000)
            browser.close()
    finally:
        client.close()
        server.terminate()
        server.wait(30)
    what = "no scaling (first chunk)" if args.plain else f"scaling {args.method} budget {args.budget} (first event)"
    print(f"built-in model, {PATH} with {what}, stream; {args.runs} runs per way,")
    print(f"alternated; server threads {env['OMP_NUM_THREADS']}; seconds, mean ± standard error")
    step = bool(rows["api step"])
    print(f"{'':<30} {'first event':>16} {'first step':>16} {'whole run':>16}")
    for way, name in (("api", "API (httpx, SSE)"), ("page", "page (Playground.stream)")):
        cols = [rows[f"{way} first"], rows[f"{way} step"], rows[f"{way} total"]]
        print(f"{name:<30} " + " ".join(f"{mean_se(c) if c else '-':>16}" for c in cols))
    if rows["drawn"]:
        print(f"{'page, click to first drawn':<30} {'-':>16} {mean_se(rows['drawn']):>16}")
    if step:
        ratio = statistics.fmean(rows["page step"]) / statistics.fmean(rows["api step"])
        print(f"page over API, first step (first particles): {ratio:.2f}x")
    ratio = statistics.fmean(rows["page first"]) / statistics.fmean(rows["api first"])
    print(f"page over API, first event: {ratio:.2f}x")


if __name__ == "__main__":
    main()
