"""How well PRMs rank, side by side: step AUROC and ECE on held-out policy steps, detection of each planted error.

Held-out policy solutions (problems that never appear in any training, 1-8
operations, sampled at each temperature) are labelled by the exact checker;
the planted errors are :mod:`steerable.tasks.builtin.prm_data`'s kinds on
held-out problems, each continued consistently. Detection is how often the
wrong line scores below the right one at the same line (``at line``) and the
finished wrong solution below the correct one (``at end``). Every PRM is
measured on the same solutions in one run.

    python benchmarks/prm_quality.py --prm builtin --prm runs/builtin-prm [--problems 300] [--solutions FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import setup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prm", action="append", help="builtin or a PRM directory (repeat to compare)")
    ap.add_argument("--problems", type=int, default=300, help="held-out problems per set")
    ap.add_argument("--temperatures", default="0.6,0.8,1.0,1.2")
    ap.add_argument("--solutions", help="held-out policy solutions (JSONL, rows of split 'eval'); sampled if absent")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    setup()
    from steerable.lm.local import LocalGenerator
    from steerable.reward.prm import TokenClassifierPRM
    from steerable.tasks.builtin import arithmetic
    from steerable.tasks.builtin.prm_data import GOAL_KINDS
    from steerable.tasks.builtin.train_prm import EVAL_SEED, measure, planted_sets, sample_solutions

    if args.solutions:
        rows = [json.loads(x) for x in Path(args.solutions).read_text().splitlines() if x.strip()]
        rows = [r for r in rows if r["split"] == "eval"]
    else:
        gen = LocalGenerator.from_pretrained("builtin", device="cpu")
        problems = arithmetic.eval_problems("all", args.problems, seed=EVAL_SEED)
        temps = [float(t) for t in args.temperatures.split(",")]
        rows = sample_solutions(gen, problems, temps, 0, "eval", None)
    sets = planted_sets(args.problems)
    results = {}
    for name in args.prm or ["builtin"]:
        prm = TokenClassifierPRM.from_pretrained(name)
        results[name] = measure(prm.model, prm.tokenizer, rows, sets)
        results[name]["parameters"] = sum(p.numel() for p in prm.model.parameters())
    if args.json:
        print(json.dumps(results, indent=2))
        return
    first = next(iter(results.values()))
    print(
        f"{first['eval_steps']} held-out policy steps ({first['eval_positive_share']:.0%} on a correct path); "
        f"{args.problems} planted errors per kind"
    )
    kinds = list(first["detection"])
    head = f"{'PRM':<40} {'params':>9} {'AUROC':>6} {'ECE':>6} " + " ".join(f"{k:>8}" for k in kinds)
    print(head)
    for name, r in results.items():
        det = r["detection"]
        print(
            f"{name[-40:]:<40} {r['parameters']:>9,} {r['step_auroc']:>6.3f} {r['ece']:>6.3f} "
            + " ".join(f"{det[k]['at_line']:>8.2f}" for k in kinds)
            + "   (at line)"
        )
        print(
            f"{'':<40} {'':>9} {'':>6} {'':>6} " + " ".join(f"{det[k]['at_end']:>8.2f}" for k in kinds) + "   (at end)"
        )
    print("goal: AUROC >= 0.95; at-line detection >= 0.9 for " + ", ".join(GOAL_KINDS))


if __name__ == "__main__":
    main()
