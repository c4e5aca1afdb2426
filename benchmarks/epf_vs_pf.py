"""ePF against PF with the resampling scheme held equal, paired per item, with how often annealing fired.

    python benchmarks/epf_vs_pf.py --scheme systematic --out runs/epf-systematic [--budgets 2,4,8,16] [--limit 200]

With the same seed and scheme, ePF is PF until the first step where entropic
annealing raises the temperature: the process draws the same tokens and the
resampler the same uniforms from the same weights. So a pair where annealing
never fired cannot differ, and the sweep runs ePF on every (item, N) but PF
only where ePF's annealing fired (and in full on the first ``--verify``
items, to check the identity); elsewhere PF's row is ePF's, marked
``same_as_epf``. Rows go to ``results.jsonl`` as ``steerable scale`` writes
them (resumable); the report prints accuracy, the items only one side solved
with a two-sided sign test, and the annealing counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling_report import sign_test  # noqa: E402
from steerable.bench.distributed import ScaleSetup  # noqa: E402
from steerable.bench.scale import read_results, run_job, run_scale  # noqa: E402
from steerable.search.registry import make_strategy  # noqa: E402
from steerable.tasks.loader import load_task  # noqa: E402


def sweep(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    epf, pf = f"epf:resampling={args.scheme}", f"pf:resampling={args.scheme}"
    items = load_task(args.task, limit=args.limit, seed=args.seed)
    built = ScaleSetup(device="cpu").build()
    make_process = built.process_factory(args.temperature, 1.0)
    out = Path(args.out)
    run_scale(items, [epf], args.budgets, make_process, built.scorer, built.checker, out, args.seed, progress=False)
    rows = {(r["item"], r["method"], r["budget"]): r for r in read_results(out / "results.jsonl")}
    strategies = {pf: make_strategy(pf, built.checker.extract)}
    with (out / "results.jsonl").open("a") as f:
        for i, item in enumerate(items):
            for n in args.budgets:
                if (item.id, pf, n) in rows:
                    continue
                e = rows[(item.id, epf, n)]
                fired = e.get("counts", {}).get("annealed_steps", 0) > 0
                if fired or i < args.verify or "error" in e:
                    row = run_job(
                        strategies,
                        make_process,
                        built.scorer,
                        built.checker,
                        i,
                        item,
                        pf,
                        n,
                        args.seed,
                        "samples",
                        None,
                    )
                else:
                    row = {**e, "method": pf, "same_as_epf": True}
                f.write(json.dumps(row) + "\n")
                f.flush()


def report(out: Path, scheme: str, budgets: list[int]) -> None:
    epf, pf = f"epf:resampling={scheme}", f"pf:resampling={scheme}"
    rows = {(r["item"], r["method"], r["budget"]): r for r in read_results(out / "results.jsonl")}
    items = sorted({k[0] for k in rows if k[1] == epf}, key=lambda s: int(s.rsplit("-", 1)[1]))
    same = run = 0
    for it in items:
        for n in budgets:
            e, p = rows.get((it, epf, n)), rows.get((it, pf, n))
            if e and p and not p.get("same_as_epf") and not e.get("counts", {}).get("annealed_steps"):
                run += 1
                same += (e["answer"], e["generated_tokens"], e["scorer_calls"]) == (
                    p["answer"],
                    p["generated_tokens"],
                    p["scorer_calls"],
                )
    print(f"{scheme}: PF run in full where annealing never fired: {same} of {run} pairs identical to ePF")
    print(f"{'N':>3} {'items':>5} {'pf':>6} {'epf':>6} {'only pf':>7} {'only epf':>8} {'p':>5}  annealing fired")
    for n in budgets:
        both = [it for it in items if (it, epf, n) in rows and (it, pf, n) in rows]
        if not both:
            continue
        e = [rows[(it, epf, n)] for it in both]
        p = [rows[(it, pf, n)] for it in both]
        only_p = sum(bool(a["correct"]) and not b["correct"] for a, b in zip(p, e, strict=True))
        only_e = sum(bool(b["correct"]) and not a["correct"] for a, b in zip(p, e, strict=True))
        steps = sum(r.get("counts", {}).get("resampling_steps", 0) for r in e)
        fired = sum(r.get("counts", {}).get("annealed_steps", 0) for r in e)
        pairs = sum(r.get("counts", {}).get("annealed_steps", 0) > 0 for r in e)
        acc = lambda rs: 100 * sum(bool(r["correct"]) for r in rs) / len(rs)  # noqa: E731
        print(
            f"{n:>3} {len(both):>5} {acc(p):>6.1f} {acc(e):>6.1f} {only_p:>7} {only_e:>8} "
            f"{sign_test(only_p, only_e):>5.2f}  {fired} of {steps} resampling steps, on {pairs} items"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scheme", default="systematic", choices=["multinomial", "systematic", "stratified"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--task", default="builtin:hard")
    ap.add_argument("--budgets", default="2,4,8,16", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--verify", type=int, default=10, help="items on which PF runs in full whatever ePF did")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if not args.report_only:
        sweep(args)
    report(Path(args.out), args.scheme, args.budgets)


if __name__ == "__main__":
    main()
