"""Load on ``steerable serve``: N concurrent clients mixing valid and invalid requests, against 1 client.

Starts the server as its own process (the clients' Python must not share its
cores' GIL), waits for ``/health``, then runs each load with asyncio + httpx:
every client sends its requests one after another. A valid request is a chat
turn (a medium built-in problem, temperature 0.8, a seed, max 96 tokens);
with ``--invalid`` > 0, that share of requests are bad in one of the ways a
careless or hostile client is (malformed or deeply nested JSON, NaN
temperature, a lone surrogate, an unknown field, an unsupported OpenAI field,
n or a strategy option out of range, a catastrophic answer regex, a prompt
over the context, a client that gives up after 50 ms). Prints, per load, the
count of each outcome (2xx, 4xx, 5xx, timeouts), requests/s, p50/p99 latency
of the valid requests and completion tokens/s, and the batching gain (tokens/s
at N clients over 1).

    python benchmarks/serve_load.py [--clients 64] [--requests 10] [--invalid 0.3] [--port 8931]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from _common import wait_until_up

PROMPT = "Q: 37+48-19=\n"

# (path, what it is, body bytes): what a careless or hostile client sends
SCALING = {"method": "pgibbs", "budget": 4, "options": {"sweeps": 10**6}}
REGEX = {"method": "sc", "budget": 2, "answer_regex": "^((.|\\n)+)+!$"}
BAD: list[tuple[str, str, bytes]] = [
    ("/v1/completions", "malformed JSON", b'{"prompt": "x",'),
    ("/v1/completions", "nested 50k deep", b'{"prompt": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
    ("/v1/completions", "NaN temperature", b'{"prompt": "Q: 1+1=\\n", "temperature": NaN}'),
    ("/v1/completions", "lone surrogate", b'{"prompt": "\\ud800"}'),
    ("/v1/chat/completions", "int text part", b'{"messages": [{"role": "user", "content": [{"text": 5}]}]}'),
    ("/v1/completions", "unknown field", json.dumps({"prompt": PROMPT, "temprature": 0.5}).encode()),
    ("/v1/completions", "unsupported field", json.dumps({"prompt": PROMPT, "best_of": 4}).encode()),
    ("/v1/completions", "huge n", json.dumps({"prompt": PROMPT, "n": 10**40}).encode()),
    ("/v1/completions", "option out of range", json.dumps({"prompt": PROMPT, "scaling": SCALING}).encode()),
    ("/v1/completions", "over the context", json.dumps({"prompt": "1" * 3000}).encode()),
    ("/v1/score", "partials over the context", json.dumps({"prompt": PROMPT, "partials": ["1" * 3000] * 8}).encode()),
    # valid: RE2 matches it in linear time, so this one is a 200
    ("/v1/completions", "catastrophic regex", json.dumps({"prompt": PROMPT, "seed": 1, "scaling": REGEX}).encode()),
]


async def _load(url: str, clients: int, requests: int, prompts: list[str], invalid: float, seed: int) -> dict:
    import httpx

    rng = random.Random(seed)
    lat: list[float] = []
    outcomes: Counter = Counter()
    tokens = 0

    async def valid(http: httpx.AsyncClient, c: int, r: int) -> None:
        nonlocal tokens
        body = {
            "model": "builtin",
            "messages": [{"role": "user", "content": prompts[(c * requests + r) % len(prompts)]}],
            "temperature": 0.8,
            "max_tokens": 96,
            "seed": c * 1000 + r,
        }
        t0 = time.perf_counter()
        resp = await http.post(url + "/v1/chat/completions", json=body)
        outcomes[f"{resp.status_code // 100}xx"] += 1
        if resp.status_code == 200:
            tokens += resp.json()["usage"]["completion_tokens"]
            lat.append(time.perf_counter() - t0)

    async def bad(http: httpx.AsyncClient) -> None:
        if rng.random() < 0.1:  # a client that gives up at once: the server must drop its rows
            body = {"prompt": PROMPT, "max_tokens": 400, "n": 4, "ignore_eos": True}
            try:
                await http.post(url + "/v1/completions", json=body, timeout=0.05)
            except httpx.TimeoutException:
                outcomes["gave up"] += 1
            return
        path, _, raw = rng.choice(BAD)
        resp = await http.post(url + path, content=raw, headers={"content-type": "application/json"})
        outcomes[f"{resp.status_code // 100}xx"] += 1

    async def client(c: int, http: httpx.AsyncClient) -> None:
        for r in range(requests):
            try:
                await (bad(http) if rng.random() < invalid else valid(http, c, r))
            except httpx.TimeoutException:
                outcomes["timeout"] += 1
            except httpx.HTTPError:
                outcomes["connection error"] += 1

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - t0
    lat.sort()
    return {
        "clients": clients,
        "requests": clients * requests,
        "outcomes": outcomes,
        "wall": wall,
        "rps": clients * requests / wall,
        "p50": statistics.median(lat) if lat else float("nan"),
        "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
        "tok_s": tokens / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--invalid", type=float, default=0.3, help="Share of requests that are bad (0 to 1).")
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
        wait_until_up(url, server)
        asyncio.run(_load(url, 2, 2, prompts, 0.0, 0))  # warm-up
        one = asyncio.run(_load(url, 1, args.requests, prompts, 0.0, 1))
        many = asyncio.run(_load(url, args.clients, args.requests, prompts, args.invalid, 2))
        health = httpx.get(url + "/health", timeout=5).json()
    finally:
        server.terminate()
        server.wait(30)
    print(f"built-in model, chat, max 96 tokens, T 0.8, server threads {env['OMP_NUM_THREADS']}; invalid share")
    print(f"{args.invalid:.0%} at {args.clients} clients (bad bodies of {len(BAD)} kinds, 10% of them clients that")
    print("give up after 50 ms); latency of valid requests")
    kinds = ["2xx", "4xx", "5xx", "timeout", "gave up", "connection error"]
    print(
        f"{'clients':>8} {'requests':>9} "
        + " ".join(f"{k:>7}" for k in kinds)
        + f" {'req/s':>7} {'p50 s':>7} {'p99 s':>7} {'tok/s':>7}"
    )
    for r in (one, many):
        print(
            f"{r['clients']:>8} {r['requests']:>9} "
            + " ".join(f"{r['outcomes'].get(k, 0):>7}" for k in kinds)
            + f" {r['rps']:>7.2f} {r['p50']:>7.3f} {r['p99']:>7.3f} {r['tok_s']:>7.0f}"
        )
    print(f"batching gain (tokens/s, {args.clients} clients over 1): {many['tok_s'] / one['tok_s']:.1f}x")
    print(f"after the load: {health['running_rows']} rows running, queue {health['queue_depth']}")


if __name__ == "__main__":
    main()
