"""PlanGEN's selection agent against each single algorithm at equal generated tokens.

The paper's claim: choosing the inference algorithm per instance (a modified
UCB over best-of-N, beam, particle filtering and refinement, with a prior from
the instance's features) does at least as well as the best single algorithm.
Every arm here is the same PlanGEN loop (rounds until the verifier passes a
plan, or the token budget is spent) with the algorithm fixed
(``plangen:arms=bon``, ...) or chosen (``plangen``), on one mixed set of
held-out lookup and maze tasks (easy and hard), the same seeds for every arm,
success ± binomial standard error and the cost per task (generated tokens,
environment steps, tool calls, seconds), overall and per environment.

The prior is fitted first on training-split tasks (never the measured,
held-out ones): per instance bucket, the share one round of each algorithm
solved. ``plangen-uniform`` is the selector without the prior (the UCB's
switching alone).

    python benchmarks/agent_plangen.py --tasks 40 --budgets 128,256 --value oracle
    python benchmarks/agent_plangen.py --fit-prior src/steerable/tasks/agent/value/plangen_prior.json --tasks 1
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
from collections import defaultdict
from pathlib import Path

from _common import setup
from steerable.agents.plangen import ARMS, fit_prior
from steerable.agents.process import AgentProcess
from steerable.agents.registry import make_value
from steerable.bench.agent_scale import run_agent_scale
from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams
from steerable.tasks.agent.data import SPLIT_MAKERS, held_out, split_tasks

ENVS, SPLITS = ("lookup", "maze"), ("easy", "hard")


def training_tasks(per_split: int, seed: int) -> list[dict]:
    """Tasks the prior is fitted on: drawn as the splits are, but never held out (so never measured)."""
    out = []
    for env in ENVS:
        for split in SPLITS:
            rng = random.Random(f"plangen-prior-{env}-{split}-{seed}")
            n = 0
            while n < per_split:
                t = SPLIT_MAKERS[env][split](rng)
                if not held_out(t):
                    out.append(t)
                    n += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin:agent")
    ap.add_argument("--value", default="oracle", help="verifier: oracle, head or head:DIR")
    ap.add_argument("--tasks", type=int, default=40, help="held-out tasks per environment and split")
    ap.add_argument("--budgets", default="128,256", help="generated tokens per task, comma-separated")
    ap.add_argument("--prior", default=None, help="a prior table to use instead of fitting one")
    ap.add_argument("--prior-tasks", type=int, default=40, help="training tasks per environment and split")
    ap.add_argument("--fit-prior", default=None, help="write the fitted prior table here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    setup()  # threads from OMP_NUM_THREADS (else every core), quiet transformers
    gen = LocalGenerator.from_pretrained(args.model, device="cpu", chat_template="never")
    value = make_value(args.value, gen, args.model)

    def make_process(greedy: bool) -> AgentProcess:
        return AgentProcess(gen, SamplingParams(temperature=0.0 if greedy else 1.0, top_p=0.95), max_steps=32)

    prior_path = args.prior
    if prior_path is None:
        fitted = fit_prior(make_process(False), value, training_tasks(args.prior_tasks, args.seed), seed=args.seed)
        fitted.update(model=args.model, value=args.value, seed=args.seed)
        prior_path = args.fit_prior or str(Path(tempfile.mkdtemp()) / "plangen_prior.json")
        Path(prior_path).write_text(json.dumps(fitted, indent=2) + "\n")
    table = json.loads(Path(prior_path).read_text())
    tasks = [t for env in ENVS for split in SPLITS for t in split_tasks(env, split, args.tasks, seed=args.seed)]
    labels = {f"plangen:prior={prior_path}": "plangen", "plangen:prior=uniform": "plangen-uniform",
              **{f"plangen:arms={a}": a for a in ARMS}}  # fmt: skip
    budgets = [int(b) for b in args.budgets.split(",")]
    out = Path(tempfile.mkdtemp())
    summary = run_agent_scale(tasks, list(labels), budgets, make_process, value, out, seed=args.seed)
    per_env: dict[tuple, list[bool]] = defaultdict(list)
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        per_env[(r["method"], r["budget"], r["env"])].append(bool(r["success"]))
    rows = []
    for s in summary["rows"]:
        envs = {e: round(sum(v) / len(v), 3) for e in ENVS if (v := per_env[(s["method"], s["budget"], e)])}
        rows.append({**s, "method": labels[s["method"]], "success_by_env": envs})
    result = {"prior": table, "tasks": len(tasks), "value": args.value, "model": args.model, "rows": rows}
    if args.json:
        print(json.dumps(result))
        return
    print(f"prior (fitted on {sum(table['tasks'].values())} training tasks, one round each): {table['table']}")
    print(f"{len(tasks)} held-out tasks (lookup and maze, easy and hard), value {args.value}, model {args.model}")
    print(f"{'arm':>16} {'budget':>6} {'success':>15} {'lookup':>7} {'maze':>6} {'gen tok':>8} {'env st':>7} "
          f"{'tools':>6} {'sec':>6} {'rounds':>7}  chosen")  # fmt: skip
    for r in rows:
        c = r.get("counts", {})
        chosen = " ".join(f"{a}:{c.get('chose_' + a, 0)}" for a in ARMS if c.get("chose_" + a))
        se = r["success_se"] if r["items"] else math.nan
        print(f"{r['method']:>16} {r['budget']:>6} {r['success']:>7.3f} ± {se:.3f} "
              f"{r['success_by_env'].get('lookup', 0):>7.3f} {r['success_by_env'].get('maze', 0):>6.3f} "
              f"{r['generated_tokens']:>8.1f} {r['env_steps']:>7.1f} {r['tool_calls']:>6.1f} {r['seconds']:>6.2f} "
              f"{c.get('rounds', 0) / r['items']:>7.2f}  {chosen}")  # fmt: skip


if __name__ == "__main__":
    main()
