"""Does the Control tab answer as fast as the API it calls? Time to the first control step, page against API.

Starts ``steerable serve --model builtin:pointnav`` as its own process (the browser and the clients must not share
its GIL), waits for ``/health``, then alternates, run by run, the same streamed episode
(``POST /v1/control/episodes`` with ``"stream": true``; V-GPS with K = 4 by default, seed = the run's number)
made three ways:

- **API**: httpx (one kept-alive client) reading the server-sent events; the clock stops at the first
  ``env_step`` event and at the last byte.
- **page**: the playground open in headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright),
  calling ``Playground.stream`` as the Control tab does; the clock (``performance.now``) stops when ``onEvent``
  first gets an ``env_step`` and when the promise resolves.
- **drawn**: the Control tab itself: a click on ``#control-run`` to the first map drawn with a step of the path
  (``Plotly.react`` on ``#control-map`` with more than one path point), and to the summary shown.

Prints mean ± standard error (seconds) per way and the page's means over the API's.

    python benchmarks/playground_control_latency.py [--runs 20] [--method vgps] [--budget 4] [--port 0]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

PATH = "/v1/control/episodes"
CHROMIUM = os.environ.get("STEERABLE_CHROMIUM", "/usr/bin/chromium")

PAGE_RUN = """async ([path, payload]) => {
  let first = null;
  const t0 = performance.now();
  await Playground.stream(path, payload, (e) => { if (first === null && e.type === "env_step")
    first = performance.now() - t0; });
  return [first / 1000, (performance.now() - t0) / 1000];
}"""

DRAWN_RUN = """async () => {
  const t0 = performance.now();
  let first = null;
  const react = Plotly.react;
  Plotly.react = function (div, data) {
    if (first === null && div.id === "control-map" && data[0].x.length > 1) first = performance.now() - t0;
    return react.apply(this, arguments);
  };
  const summary = document.getElementById("control-summary");
  const done = new Promise((resolve) => {
    const watch = new MutationObserver(() => {
      if (/^(success|No result)/.test(summary.textContent)) { watch.disconnect(); resolve(performance.now() - t0); }
    });
    watch.observe(summary, {childList: true, characterData: true, subtree: true});
  });
  document.getElementById("control-run").click();
  const total = await done;
  Plotly.react = react;
  return [first / 1000, total / 1000];
}"""


def api_run(client, url: str, payload: dict) -> tuple[float, float]:
    """Seconds to the first ``env_step`` event and to the end of the stream, on a kept-alive connection (as the
    browser's)."""
    t0 = time.perf_counter()
    first = None
    with client.stream("POST", url + PATH, json=payload, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None and '"env_step"' in line:
                first = time.perf_counter() - t0
    return first, time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mean_se(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), statistics.stdev(xs) / len(xs) ** 0.5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20, help="Timed runs per way (after one warm-up each).")
    ap.add_argument("--method", default="vgps")
    ap.add_argument("--budget", type=int, default=4)
    ap.add_argument("--port", type=int, default=0, help="0: a free port (another server may hold a fixed one).")
    args = ap.parse_args()
    import httpx
    from playwright.sync_api import sync_playwright

    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).parent / "steerable"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [str(exe), "serve", "--model", "builtin:pointnav", "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    rows: dict[str, list[float]] = {k: [] for k in ("api", "page", "drawn")}
    ends: dict[str, list[float]] = {k: [] for k in rows}
    body = {"method": args.method, "budget": args.budget, "stream": True}
    try:
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(url + "/v1/models", timeout=1).json()["data"][0].get("kind") == "control":
                    break
            except (httpx.HTTPError, ValueError, KeyError, IndexError):
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("the server did not come up")
            time.sleep(0.3)
        client = httpx.Client()
        api_run(client, url, {**body, "seed": 0})  # warm-up
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url + "/playground")
            page.wait_for_selector("#control-run")
            page.select_option("#control-method", args.method)
            page.fill("#control-budget", str(args.budget))
            page.evaluate(PAGE_RUN, [PATH, {**body, "seed": 0}])  # warm-up
            for i in range(1, args.runs + 1):
                for way, run in (
                    ("api", lambda i=i: api_run(client, url, {**body, "seed": i})),
                    ("page", lambda i=i: page.evaluate(PAGE_RUN, [PATH, {**body, "seed": i}])),
                    ("drawn", lambda i=i: (page.fill("#control-seed", str(i)), page.evaluate(DRAWN_RUN))[1]),
                ):
                    first, total = run()
                    rows[way].append(first)
                    ends[way].append(total)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    print(
        f"{args.method} budget {args.budget} on builtin:pointnav, {args.runs} episodes (seeds 1..{args.runs}) per way"
    )
    print(f"{'way':<8} {'first control step (s)':>24} {'whole episode (s)':>20}")
    for way in rows:
        (m, s), (mt, st) = mean_se(rows[way]), mean_se(ends[way])
        print(f"{way:<8} {m:>15.4f} ± {s:.4f} {mt:>11.4f} ± {st:.4f}")
    api, api_end = statistics.fmean(rows["api"]), statistics.fmean(ends["api"])
    for way in ("page", "drawn"):
        ratio = statistics.fmean(rows[way]) / api
        print(f"{way} / api: first step x{ratio:.2f}, episode x{statistics.fmean(ends[way]) / api_end:.2f}")


if __name__ == "__main__":
    main()
