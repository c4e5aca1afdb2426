"""A 10-turn tool loop against the server's engine, with the prefix cache and without, side by side.

The client is the official ``openai`` client over the app in process (no
port); the chains environment answers every ``next`` call, and the whole
conversation is sent again each turn, as any OpenAI tool loop does. Where the
model answers before the last turn, the loop goes on with the call it should
have made (so both runs hold the same 10 turns; greedy decoding makes them
identical). Prints per turn the prompt tokens, the tokens each engine
prefilled, and the seconds per request, and the ratios.

    python benchmarks/agent_prefix_cache.py [--model builtin:agent] [--turns 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

from _common import setup


def loop(client, turns: int) -> list[tuple[int, int, float]]:
    """``(prompt tokens, prefilled tokens, seconds)`` of each turn."""
    from steerable.agents.tools import TOOLS
    from steerable.tasks.agent.envs import make_env

    env = make_env("chains")
    task = {"env": "chains", "start": 37, "ops": "+48-19*3+5-7*2+11-4*3+9" * 2 + "+1-2*2+3-1*2", "max_steps": 64}
    question = env.reset(task).split(" ", 1)[1].strip()
    messages: list[dict] = [{"role": "user", "content": question}]
    out = []
    for t in range(turns):
        start = time.perf_counter()
        r = client.chat.completions.create(
            model="agent", messages=messages, tools=[TOOLS["next"].schema], temperature=0, max_tokens=48
        )
        seconds = time.perf_counter() - start
        out.append(
            (r.usage.prompt_tokens, r.usage.prompt_tokens - r.usage.prompt_tokens_details.cached_tokens, seconds)
        )
        msg = r.choices[0].message
        calls = msg.tool_calls or []
        content = msg.content if calls else None  # an early answer is replaced by the call it should have been
        call_id = calls[0].id if calls else f"forced_{t}"
        call = {"id": call_id, "type": "function", "function": {"name": "next", "arguments": json.dumps({})}}
        messages.append({"role": "assistant", "content": content, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": call_id, "content": env.step("next").text})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:agent")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="Runs of each; the fastest time per turn is shown.")
    args = ap.parse_args()
    setup()
    import openai
    from fastapi.testclient import TestClient

    from steerable.serve import build

    runs = {}
    for name, mb in (("cache", 512.0), ("no cache", 0.0)):
        best = None
        for _ in range(args.repeats):
            engine, app = build(args.model, device="cpu", model_name="agent", tool_format="agent", prefix_cache_mb=mb)
            with TestClient(app) as http:
                client = openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=http)
                rows = loop(client, args.turns)
            best = rows if best is None else [(p, f, min(s, b[2])) for (p, f, s), b in zip(rows, best, strict=True)]
        runs[name] = best
    cached, plain = runs["cache"], runs["no cache"]
    print(
        f"{'turn':>4} {'prompt':>7} | {'prefilled':>9} {'(plain)':>8} | {'ms':>7} {'(plain)':>8} | {'time ratio':>10}"
    )
    for t, ((p, f, s), (_, f0, s0)) in enumerate(zip(cached, plain, strict=True), 1):
        print(f"{t:>4} {p:>7} | {f:>9} {f0:>8} | {s * 1e3:>7.1f} {s0 * 1e3:>8.1f} | {s / s0:>10.2f}")
    pre, pre0 = sum(f for _, f, _ in cached), sum(f for _, f, _ in plain)
    sec, sec0 = sum(s for *_, s in cached), sum(s for *_, s in plain)
    print(f"total prefilled {pre} vs {pre0} ({pre / pre0:.2f}x); seconds {sec:.3f} vs {sec0:.3f} ({sec / sec0:.2f}x)")


if __name__ == "__main__":
    main()
