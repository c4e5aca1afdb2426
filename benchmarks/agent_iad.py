"""Iterative agent decoding with the environment's feedback, against best-of-N and against the same calls without
feedback, at equal calls (episodes), on chains.

IAD and resample stop once a candidate solves the task, and call k of a run is
the same whatever its budget (seeded per call), so one run at the largest
budget gives success at every smaller one: a task counts as solved at N calls
when it was solved by call N (the row records the call). Best-of-N samples N
episodes at once and commits the one the value function rates best (the exact
oracle here, which rates a solved episode 1), run at each budget. Same tasks
and seeds for every arm; success ± binomial SE; mean calls, generated tokens
and seconds per task.

    python benchmarks/agent_iad.py --model builtin:agent-plan --tasks 40 --ops 9,15 --budget 8
"""

from __future__ import annotations

import argparse
import json
import math
import random

from _common import setup
from steerable.agents.process import AgentProcess
from steerable.agents.registry import make_method, make_value
from steerable.bench.agent_scale import run_agent_scale, run_one
from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams
from steerable.streams import item_seed
from steerable.tasks.agent.data import chains_task, held_out_tasks


def tasks_of(lo: int, hi: int, count: int, seed: int) -> list[dict]:
    rng = random.Random(f"iad-{lo}-{hi}-{seed}")
    return held_out_tasks(lambda: chains_task(rng, rng.randint(lo, hi)), count)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin:agent-plan")
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--ops", default="9,15", help="lo,hi: operations per chain")
    ap.add_argument("--budget", type=int, default=8, help="largest number of calls")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    setup()
    lo, hi = (int(x) for x in args.ops.split(","))
    tasks = tasks_of(lo, hi, args.tasks, args.seed)
    gen = LocalGenerator.from_pretrained(args.model, device="cpu", chat_template="never")

    def make_process(greedy: bool) -> AgentProcess:
        t = 0.0 if greedy else args.temperature
        return AgentProcess(gen, SamplingParams(temperature=t, top_p=0.95), max_steps=64, max_tokens=1000)

    budgets = [b for b in (1, 2, 4, 8, 16, 32) if b <= args.budget]
    value = make_value("oracle")
    rows = []
    for name in ("resample", "iad"):
        per_task = _rows_of(name, tasks, make_process, value, args)
        for b in budgets:
            ok = [r["success"] and r["counts"]["calls"] <= b for r in per_task]
            p = sum(ok) / len(ok)
            calls = sum(min(r["counts"]["calls"], b) for r in per_task) / len(per_task)
            rows.append({"method": name, "calls": b, "success": round(p, 3), "se": round(_se(p, len(ok)), 3),
                         "mean_calls_used": round(calls, 2)})  # fmt: skip
        rows[-1].update(_cost(per_task))
    bon = run_agent_scale(tasks, ["bon"], budgets, make_process, value, None, args.seed)["rows"]
    for r in bon:
        rows.append({"method": "bon", "calls": r["budget"], "success": r["success"], "se": r["success_se"],
                     "mean_calls_used": r["budget"], "generated_tokens": r["generated_tokens"],
                     "seconds": r["seconds"]})  # fmt: skip
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    print(f"chains of {lo}-{hi} operations, {args.tasks} held-out tasks, T={args.temperature}, model {args.model}")
    print(f"{'calls':>5} " + " ".join(f"{m:>16}" for m in ("bon", "resample", "iad")))
    for b in budgets:
        cells = []
        for m in ("bon", "resample", "iad"):
            r = next(x for x in rows if x["method"] == m and x["calls"] == b)
            cells.append(f"{r['success']:>8.3f} ± {r['se']:.3f}")
        print(f"{b:>5} " + " ".join(f"{c:>16}" for c in cells))
    for r in rows:
        if "generated_tokens" in r:
            print(f"{r['method']} at {r['calls']} calls: {r['generated_tokens']:.0f} generated tokens, "
                  f"{r['mean_calls_used']} calls used, {r['seconds']:.2f} s per task")  # fmt: skip


def _rows_of(name, tasks, make_process, value, args) -> list[dict]:
    """Per-task rows of a method at the largest budget."""
    _, method = make_method(name)
    proc = make_process(False)
    return [run_one(method, proc, value, t, args.budget, item_seed(args.seed, i), True) for i, t in enumerate(tasks)]


def _cost(rows: list[dict]) -> dict:
    n = len(rows)
    return {"generated_tokens": round(sum(r.get("generated_tokens", 0) for r in rows) / n, 1),
            "seconds": round(sum(r.get("seconds", 0) for r in rows) / n, 3)}  # fmt: skip


def _se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


if __name__ == "__main__":
    main()
