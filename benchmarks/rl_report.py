"""Side by side: RL runs of ``steerable train rl`` (their metrics.jsonl) and one comparison plot.

For each run directory: steps, minutes, held-in greedy accuracy at the start
and the end, mean policy entropy over the first and the last quarter of the
steps and over the same steps as the first run (entropy collapse is what
Clip-Cov / KL-Cov are for), mean completion length early and late; then each
later run's entropy against the first, step by step.
``--plot FILE`` draws reward, held-in accuracy, entropy and length of every
run on one figure.

    python benchmarks/rl_report.py runs/rl_grpo runs/rl_clip_cov runs/rl_kl_cov --plot runs/rl_entropy.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    data = {run: _rows(run) for run in args.runs}
    steps_of = {run: [r for r in rows if "entropy" in r and not r.get("final")] for run, rows in data.items()}
    common = min(max((r["step"] for r in s), default=0) for s in steps_of.values())
    print(
        f"{'run':<22} {'steps':>6} {'min':>5} {'held-in start':>14} {'end':>6} "
        f"{'H first q':>10} {'H last q':>9} {f'H <= {common}':>10} {'len first q':>12} {'len last q':>11}"
    )
    for run, rows in data.items():
        st = steps_of[run]
        n = len(st)
        q = max(1, n // 4)
        acc = [r["held_in_accuracy"] for r in rows if "held_in_accuracy" in r]
        secs = max((r.get("seconds") or 0) for r in rows)
        ent = [r["entropy"] for r in st]
        gen_rows = [r for r in st if "completions/mean_length" in r]  # with mini-batches, logged on generation steps
        qg = max(1, len(gen_rows) // 4)
        lens = [r["completions/mean_length"] for r in gen_rows]
        same = [r["entropy"] for r in st if r["step"] <= common]
        print(
            f"{run.name:<22} {n:>6} {secs / 60:>5.1f} {acc[0] if acc else float('nan'):>14.1%} "
            f"{acc[-1] if acc else float('nan'):>6.1%} {_mean(ent[:q]):>10.4f} {_mean(ent[-q:]):>9.4f} "
            f"{_mean(same):>10.4f} {_mean(lens[:qg]):>12.1f} {_mean(lens[-qg:]):>11.1f}"
        )
    # paired against the first run, step by step (runs with one seed see the same prompts in the same order)
    first_h = {r["step"]: r["entropy"] for r in steps_of[args.runs[0]]}
    for run in args.runs[1:]:
        h = {r["step"]: r["entropy"] for r in steps_of[run]}
        both = sorted(set(h) & set(first_h))
        if both:
            ratio = sum(h[s] for s in both) / sum(first_h[s] for s in both)
            above = sum(h[s] > first_h[s] for s in both) / len(both)
            print(
                f"{run.name} vs {args.runs[0].name}: entropy x{ratio:.3f} over {len(both)} common steps, "
                f"higher on {above:.0%} of them"
            )
    if args.plot:
        from steerable.rl.session import plot_curves

        first, *rest = args.runs
        plot_curves(
            first / "metrics.jsonl",
            args.plot,
            title="RL runs",
            others={r.name: r / "metrics.jsonl" for r in rest},
            first_label=first.name,
        )
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
