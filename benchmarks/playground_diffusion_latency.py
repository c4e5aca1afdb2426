"""The Diffusion tab against the images API it calls: time to the first particle, and what streaming costs.

Starts ``steerable serve --model builtin:digits`` as its own process (the browser and the clients must not share
its GIL), then alternates, run by run (seed = run number), the same request made five ways:

- **API, plain**: ``POST /v1/images/generations`` without ``stream`` (one httpx client for every run, its
  connection kept alive as the browser keeps its own): the whole answer.
- **API, stream**: the same with ``"stream": true``, read as a client reads server-sent events: the clock stops
  at the first ``step`` event (the first particles' previews) and at the last byte.
- **page, stream**: ``Playground.stream`` in the playground page (headless Debian ``chromium`` via Playwright),
  as the tab calls it: the clock (``performance.now``) stops when the first ``step`` event reaches ``onEvent``
  and when the promise resolves.
- **page, drawn**: a click on the tab's Run to the first particle image in the page
  (``#diffusion-particles-run .df-step img``, seen by a MutationObserver) and to the drawn result
  (``#diffusion-results[data-state=done]``).

Prints mean ± standard error (seconds) per way, the run's own seconds on the engine thread (the answer's
``cost.seconds``) plain and streamed, the NFE of the plain and the streamed answer (equal: previews cost no
model call) and the stream's size.

    python benchmarks/playground_diffusion_latency.py [--runs 10] [--method fk] [--budget 4] [--port 8933]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import wait_until_up

ROUTE = "/v1/images/generations"
CHROMIUM = os.environ.get("STEERABLE_CHROMIUM", "/usr/bin/chromium")

PAGE_RUN = """async ([path, payload]) => {
  let first = null;
  const t0 = performance.now();
  const mark = (e) => { if (first === null && e.type === 'step') first = performance.now() - t0; };
  await Playground.stream(path, payload, mark);
  return [first / 1000, (performance.now() - t0) / 1000];
}"""

DRAWN_RUN = """async () => {
  const t0 = performance.now();
  const when = (selector) => new Promise((resolve) => {
    const look = () => document.querySelector(selector) && (resolve(performance.now() - t0), true);
    if (look()) return;
    const watch = new MutationObserver(() => look() && watch.disconnect());
    watch.observe(document.body, {subtree: true, childList: true, attributes: true});
  });
  document.getElementById('diffusion-run').click();  // clears the last run's view before it returns
  const first = when('#diffusion-particles-run .df-step img');
  const done = when('#diffusion-results[data-state=done]');
  return [(await first) / 1000, (await done) / 1000];
}"""


def body(args, seed: int, stream: bool) -> dict:
    out = {"prompt": "3", "seed": seed, "scaling": {"method": args.method, "budget": args.budget}}
    return {**out, "stream": True} if stream else out


def api_stream(client, url: str, payload: dict) -> tuple[float, float, dict, int]:
    """(seconds to the first step event, to the last byte, the answer's cost, bytes streamed)."""
    t0 = time.perf_counter()
    first, size, last = None, 0, None
    with client.stream("POST", url + ROUTE, json=payload, timeout=300) as r:
        for line in r.iter_lines():
            size += len(line) + 1
            if first is None and '"type":"step"' in line:
                first = time.perf_counter() - t0
            if line.startswith("data: {") and '"steerable.event"' not in line:
                last = json.loads(line[6:])
    return first, time.perf_counter() - t0, last["steerable"]["cost"], size


def mean_se(xs: list[float]) -> str:
    se = statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan")
    return f"{statistics.fmean(xs):.3f} ± {se:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10, help="Timed runs per way (after one warm-up each).")
    ap.add_argument("--method", default="fk")
    ap.add_argument("--budget", type=int, default=4)
    ap.add_argument("--port", type=int, default=8933)
    args = ap.parse_args()
    import httpx
    from playwright.sync_api import sync_playwright

    url = f"http://127.0.0.1:{args.port}"
    exe = Path(sys.executable).parent / "steerable"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [str(exe), "serve", "--model", "builtin:digits", "--port", str(args.port)]
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    keys = ("plain", "api first", "api total", "page first", "page total", "drawn first", "drawn done")
    keys += ("engine plain", "engine stream")  # the run's own seconds on the engine thread (cost.seconds)
    rows: dict[str, list[float]] = {k: [] for k in keys}
    nfe: dict[str, set] = {"plain": set(), "stream": set()}
    sizes: list[int] = []
    try:
        wait_until_up(url, server)
        client = httpx.Client()  # one client, its connection kept alive, as the page's browser keeps its own
        client.post(url + ROUTE, json=body(args, 0, False), timeout=300)  # warm-up
        api_stream(client, url, body(args, 0, True))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url + "/playground#diffusion")
            page.wait_for_selector("#diffusion-run")
            page.select_option("#diffusion-method", args.method)
            page.fill("#diffusion-budget", str(args.budget))
            page.evaluate(PAGE_RUN, [ROUTE, body(args, 0, True)])  # warm-up
            for i in range(1, args.runs + 1):
                t0 = time.perf_counter()
                r = client.post(url + ROUTE, json=body(args, i, False), timeout=300)
                rows["plain"].append(time.perf_counter() - t0)
                nfe["plain"].add(r.json()["steerable"]["cost"]["nfe"])
                rows["engine plain"].append(r.json()["steerable"]["cost"]["seconds"])
                first, total, cost, size = api_stream(client, url, body(args, i, True))
                rows["engine stream"].append(cost["seconds"])
                rows["api first"].append(first)
                rows["api total"].append(total)
                nfe["stream"].add(cost["nfe"])
                sizes.append(size)
                first, total = page.evaluate(PAGE_RUN, [ROUTE, body(args, i, True)])
                rows["page first"].append(first)
                rows["page total"].append(total)
                page.fill("#diffusion-seed", str(i))
                first, done = page.evaluate(DRAWN_RUN)
                rows["drawn first"].append(first)
                rows["drawn done"].append(done)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    print(f"builtin:digits, {ROUTE}, {args.method} budget {args.budget}, digit 3; {args.runs} runs per way,")
    print(f"alternated (seed = run); server threads {env['OMP_NUM_THREADS']}; seconds, mean ± standard error")
    print(f"{'':<34} {'first particle':>16} {'whole run':>16}")
    print(f"{'API, plain (no stream)':<34} {'':>16} {mean_se(rows['plain']):>16}")
    print(f"{'API, stream (httpx, SSE)':<34} {mean_se(rows['api first']):>16} {mean_se(rows['api total']):>16}")
    print(f"{'page, Playground.stream':<34} {mean_se(rows['page first']):>16} {mean_se(rows['page total']):>16}")
    print(f"{'page, Run click to drawn':<34} {mean_se(rows['drawn first']):>16} {mean_se(rows['drawn done']):>16}")
    print(f"{'engine seconds, plain':<34} {'':>16} {mean_se(rows['engine plain']):>16}")
    print(f"{'engine seconds, streamed':<34} {'':>16} {mean_se(rows['engine stream']):>16}")
    ratio = statistics.fmean(rows["page first"]) / statistics.fmean(rows["api first"])
    print(f"page over API, first particle: {ratio:.2f}x")
    print(f"NFE per answer: plain {sorted(nfe['plain'])}, streamed {sorted(nfe['stream'])}")
    print(f"stream size: {statistics.fmean(sizes) / 1000:.1f} kB per run (mean)")


if __name__ == "__main__":
    main()
