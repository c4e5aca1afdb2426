"""IterResearch's Markovian workspace against the growing transcript: accuracy against chain length.

The paper's interaction scaling: an agent whose context is rebuilt every
round (question, report, last action and observation) keeps its accuracy as
the work grows, where one growing transcript runs past what the model handles.
Here: chains of 5 to 30 operations served three a round by the chains
environment, greedy decoding, the same held-out-style tasks for both methods
(seeded), success ± binomial standard error, and the cost per task
(generated tokens, environment steps, the longest context the model read).

    python benchmarks/agent_workspace.py --model builtin:agent --tasks 30 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import random

from _common import setup
from steerable.agents.process import AgentProcess, episode
from steerable.agents.registry import make_method
from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams
from steerable.tasks.agent.data import chains_task, held_out_tasks
from steerable.tasks.agent.envs import replay

LENGTHS = (5, 10, 15, 20, 25, 30)


def tasks_of_length(n_ops: int, count: int, seed: int) -> list[dict]:
    rng = random.Random(f"workspace-{n_ops}-{seed}")
    return held_out_tasks(lambda: chains_task(rng, n_ops), count)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin:agent")
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    setup()  # threads from OMP_NUM_THREADS (else every core), quiet transformers
    gen = LocalGenerator.from_pretrained(args.model, device="cpu", chat_template="never")
    proc = AgentProcess(gen, SamplingParams(temperature=0.0), max_steps=64, max_tokens=1000)
    rows = []
    for n_ops in LENGTHS:
        tasks = tasks_of_length(n_ops, args.tasks, args.seed)
        for name in ("transcript", "workspace"):
            _, method = make_method(name)
            ok, gen_tok, steps, longest = 0, 0, 0, 0
            for i, task in enumerate(tasks):
                cond = episode(task)
                res = method.run(proc, None, 1, cond, seed=i)
                ok += replay(cond.env, res.text or "").solved
                gen_tok += res.cost.generated_tokens
                steps += res.cost.env_steps
                longest = max(longest, len(cond.prompt) + len(res.text or "")) if name == "transcript" else 0
            p = ok / len(tasks)
            rows.append({"n_ops": n_ops, "method": name, "success": round(p, 3),
                         "se": round(math.sqrt(p * (1 - p) / len(tasks)), 3),
                         "generated_tokens": round(gen_tok / len(tasks), 1), "env_steps": round(steps / len(tasks), 1),
                         "longest_transcript_chars": longest or None})  # fmt: skip
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    print(f"chains, {args.tasks} tasks per length, greedy, model {args.model}")
    print(f"{'ops':>4} {'transcript':>16} {'workspace':>16} {'gen tok (t / w)':>18} {'longest transcript':>19}")
    for n_ops in LENGTHS:
        t, w = (next(r for r in rows if r["n_ops"] == n_ops and r["method"] == m) for m in ("transcript", "workspace"))
        tok = f"{t['generated_tokens']:>8.0f} / {w['generated_tokens']:<8.0f}"
        print(f"{n_ops:>4} {t['success']:>8.3f} ± {t['se']:.3f} {w['success']:>8.3f} ± {w['se']:.3f} {tok} "
              f"{t['longest_transcript_chars']:>12} chars")  # fmt: skip


if __name__ == "__main__":
    main()
