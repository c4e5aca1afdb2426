"""ARIES against static Graph-of-Thoughts schedules on long chains: accuracy and cost, side by side.

The paper's comparison: a policy that picks thought-graph transformations
from the graph's state against static schedules whose hyperparameters are
searched; ARIES should match or beat the best static schedule (chosen here by
accuracy, ties by fewer tokens) at lower inference cost. Every arm runs the
same held-out-style chains (12-24 operations, seeded) through
``steerable agent scale``'s runner, with the same seeds and budget (model
calls per task); success is the chains environment's replay of the answer,
± binomial standard error, and the cost per task is generated tokens, model
calls (solve and refine rows) and seconds.

    python benchmarks/agent_aries.py --model builtin --tasks 12 --budget 24 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from _common import setup
from steerable.agents.process import AgentProcess
from steerable.bench.agent_scale import run_agent_scale
from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams
from steerable.tasks.agent.data import chains_task, held_out_tasks

#: the static schedules, from plain IO in the largest pieces to the most compute per part (a wider grid with
#: --static, e.g. static:part=4,static:refines=2,static:samples=3:refines=2; each arm costs minutes on two cores)
STATIC = ("static", "static:part=4:refines=2", "static:part=3:samples=2:refines=2")


def chains(count: int, lo: int, hi: int, seed: int) -> list[dict]:
    rng = random.Random(f"aries-{lo}-{hi}-{seed}")
    return held_out_tasks(lambda: chains_task(rng, rng.randint(lo, hi)), count)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin", help="builtin (the arithmetic model), builtin:agent or a directory")
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--budget", type=int, default=24, help="model calls per task")
    ap.add_argument("--lengths", default="12-24", help="operations per chain, lo-hi")
    ap.add_argument("--static", default=",".join(STATIC), help="the static schedules, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="directory for results.jsonl (a rerun resumes)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    setup()  # threads from OMP_NUM_THREADS (else every core), quiet transformers
    lo, hi = map(int, args.lengths.split("-"))
    tasks = chains(args.tasks, lo, hi, args.seed)
    gen = LocalGenerator.from_pretrained(args.model, device="cpu", chat_template="never")
    proc = AgentProcess(gen, SamplingParams(temperature=1.0, top_p=0.95))
    methods = ["aries", *args.static.split(",")]
    rows = run_agent_scale(tasks, methods, [args.budget], lambda greedy: proc, None, args.out, seed=args.seed)["rows"]
    for r in rows:
        r["model_calls"] = round(r.get("counts", {}).get("model_calls", 0) / max(r["items"] - r["errors"], 1), 2)
    aries = rows[0]
    best = max(rows[1:], key=lambda r: (r["success"], -r["generated_tokens"]))
    verdict = {
        "best_static": best["method"],
        "accuracy_difference": round(aries["success"] - best["success"], 4),
        "token_ratio": round(aries["generated_tokens"] / max(best["generated_tokens"], 1e-9), 3),
    }
    if args.json:
        print(json.dumps({"rows": rows, "verdict": verdict}))
        return
    print(f"chains of {lo}-{hi} ops, {args.tasks} tasks, budget {args.budget} model calls, model {args.model}")
    print(f"{'method':<26} {'success':>15} {'gen tok':>8} {'calls':>6} {'seconds':>8}  actions")
    for r in rows:
        acts = {k: v for k, v in r.get("counts", {}).items() if k not in ("model_calls", "verified_root")}
        print(f"{r['method']:<26} {r['success']:>7.3f} ± {r['success_se']:.3f} {r['generated_tokens']:>8.0f} "
              f"{r['model_calls']:>6.1f} {r['seconds']:>8.2f}  {json.dumps(acts)}")  # fmt: skip
    print(f"best static by accuracy: {best['method']}; ARIES - best = {verdict['accuracy_difference']:+.3f} accuracy "
          f"at {verdict['token_ratio']:.2f}x its tokens")  # fmt: skip


if __name__ == "__main__":
    main()
