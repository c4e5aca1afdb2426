"""Load on ``steerable serve``: 32 concurrent clients x 10 chat requests against 1 client, same server.

Starts the server as its own process (the clients' Python must not share its
cores' GIL), waits for ``/health``, then runs each load with asyncio + httpx:
every client sends its requests one after another (a chat turn each: a medium
built-in problem, temperature 0.8, a seed, max 96 tokens). Prints errors,
requests/s, p50/p99 latency and completion tokens/s per load, and the batching
gain (tokens/s at 32 clients over 1).

    python benchmarks/serve_load.py [--clients 32] [--requests 10] [--port 8931]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


async def _load(url: str, clients: int, requests: int, prompts: list[str]) -> dict:
    import httpx

    lat: list[float] = []
    tokens = errors = 0

    async def client(c: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens, errors
        for r in range(requests):
            body = {
                "model": "builtin",
                "messages": [{"role": "user", "content": prompts[(c * requests + r) % len(prompts)]}],
                "temperature": 0.8,
                "max_tokens": 96,
                "seed": c * 1000 + r,
            }
            t0 = time.perf_counter()
            try:
                resp = await http.post(url + "/v1/chat/completions", json=body)
                if resp.status_code != 200:
                    errors += 1
                    continue
                tokens += resp.json()["usage"]["completion_tokens"]
            except httpx.HTTPError:
                errors += 1
                continue
            lat.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - t0
    lat.sort()
    return {
        "clients": clients,
        "requests": clients * requests,
        "errors": errors,
        "wall": wall,
        "rps": len(lat) / wall,
        "p50": statistics.median(lat) if lat else float("nan"),
        "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
        "tok_s": tokens / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--port", type=int, default=8931)
    args = ap.parse_args()
    import httpx

    from steerable.tasks.builtin.arithmetic import eval_problems

    prompts = [p.prompt for p in eval_problems("medium", 200)]
    url = f"http://127.0.0.1:{args.port}"
    exe = Path(sys.executable).parent / "steerable"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    server = subprocess.Popen([str(exe), "serve", "--port", str(args.port)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("the server did not come up")
            time.sleep(0.3)
        asyncio.run(_load(url, 2, 2, prompts))  # warm-up
        one = asyncio.run(_load(url, 1, args.requests, prompts))
        many = asyncio.run(_load(url, args.clients, args.requests, prompts))
    finally:
        server.terminate()
        server.wait(30)
    print(f"built-in model, chat, max 96 tokens, T 0.8, server threads {env['OMP_NUM_THREADS']}")
    print(f"{'clients':>8} {'requests':>9} {'errors':>7} {'req/s':>7} {'p50 s':>7} {'p99 s':>7} {'tok/s':>8}")
    for r in (one, many):
        print(
            f"{r['clients']:>8} {r['requests']:>9} {r['errors']:>7} {r['rps']:>7.2f} "
            f"{r['p50']:>7.3f} {r['p99']:>7.3f} {r['tok_s']:>8.0f}"
        )
    print(f"batching gain (tokens/s, {args.clients} clients over 1): {many['tok_s'] / one['tok_s']:.1f}x")


if __name__ == "__main__":
    main()
