"""Tool-integrated reasoning against text only: pass@k for k = 1..64 on the calculator's hard split.

"Understanding Tool-Integrated Reasoning" (Lin & Xu, 2025) shows that a tool
widens what a model can solve: the TIR pass@k curve sits above the text-only
one at every k, with problems gained far outnumbering problems lost. Here the
same built-in agent model is posed each hard problem (one two-digit by
two-digit product in a chain) twice: with the calculator offered (``[calc]``,
tool lines answered by the environment) and without it (text only). n = 64
episodes per problem and form at temperature 1; pass@k is the unbiased
estimator of Chen et al. (2021), ``1 - C(n-c, k) / C(n, k)``, averaged over
problems, with its standard error over problems.

    python benchmarks/agent_tir.py --problems 100 --n 64 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import time

from _common import setup
from steerable.agents.process import AgentProcess, episode
from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams
from steerable.streams import item_seed
from steerable.tasks.agent.data import split_tasks

KS = (1, 2, 4, 8, 16, 32, 64)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al.'s unbiased estimator of P(at least one of k samples is correct) from c correct of n."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def solved_counts(gen, tasks, n: int, tools: bool, seed: int) -> tuple[list[int], dict]:
    """Correct episodes of ``n`` per task, and the cost of sampling them."""
    proc = AgentProcess(gen, SamplingParams(temperature=1.0), max_steps=12)
    before, t0 = proc.usage, time.perf_counter()
    out = []
    for i, task in enumerate(tasks):
        state = proc.init(episode(task, tools=tools), n, seed=item_seed(seed, i))
        while not all(proc.is_terminal(state)):
            proc.propose(state)
        out.append(sum(proc.solved(state)))
    u = proc.usage - before
    per = len(tasks) * n
    cost = {
        "generated_tokens": round(u.generated_tokens / per, 1),
        "tool_calls": round(u.tool_calls / per, 2),
        "env_tokens": round(u.appended_tokens / per, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return out, cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin:agent")
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    setup()  # threads from OMP_NUM_THREADS (else every core), quiet transformers
    gen = LocalGenerator.from_pretrained(args.model, device="cpu", chat_template="never")
    tasks = split_tasks("calculator", "hard", args.problems, seed=args.seed)
    counts, costs, curves = {}, {}, {}
    for form, tools in (("tool", True), ("text", False)):
        counts[form], costs[form] = solved_counts(gen, tasks, args.n, tools, args.seed)
        curves[form] = {}
        for k in (k for k in KS if k <= args.n):
            vals = [pass_at_k(args.n, c, k) for c in counts[form]]
            mean = sum(vals) / len(vals)
            se = math.sqrt(sum((v - mean) ** 2 for v in vals) / max(len(vals) - 1, 1) / len(vals))
            curves[form][k] = (round(mean, 4), round(se, 4))
    gained = sum(t > 0 and x == 0 for t, x in zip(counts["tool"], counts["text"], strict=True))
    lost = sum(t == 0 and x > 0 for t, x in zip(counts["tool"], counts["text"], strict=True))
    crossed = [k for k in curves["tool"] if curves["tool"][k][0] < curves["text"][k][0]]
    report = {
        "problems": len(tasks),
        "n": args.n,
        "pass_at_k": curves,
        "gained": gained,
        "lost": lost,
        "tool_below_text_at": crossed,
        "cost_per_episode": costs,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"calculator hard split, {len(tasks)} problems, n={args.n} episodes per problem and form, T=1")
    print(f"{'k':>4} {'tool':>16} {'text':>16} {'tool/text':>10}")
    for k in curves["tool"]:
        (t, tse), (x, xse) = curves["tool"][k], curves["text"][k]
        print(f"{k:>4} {t:>8.3f} ± {tse:.3f} {x:>8.3f} ± {xse:.3f} {t / max(x, 1e-9):>10.2f}")
    print(f"problems solved at n={args.n}: gained with the tool {gained}, lost {lost}; tool below text at k={crossed}")
    print(f"cost per episode: {json.dumps(costs)}")


if __name__ == "__main__":
    main()
