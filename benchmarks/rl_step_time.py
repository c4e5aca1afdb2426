"""Seconds per training step of RL algorithms against GRPO's, side by side in one run, through ``train_rl``.

Every algorithm trains a fresh copy of the built-in model on ``builtin:medium`` (4 prompts x 8 rollouts,
the README's settings) for ``--steps`` optimiser steps, in rotation over ``--rounds`` rounds, so that load
from other processes hits them alike. A step's time is the mean over the steps after the first generated
batch (MDPO takes 4 optimiser steps on each batch: its mean spans whole batches). Prints each algorithm's
seconds per step, its ratio to GRPO's, and the steps a run of ``--minutes`` would reach at GRPO's README pace
(``--grpo-steps`` in that time), which is how the README's ``--steps`` budgets are chosen on a shared machine.

    python benchmarks/rl_step_time.py --algos grpo,brpo,mdpo,icpo,grpo_pp [--steps 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from _common import setup


def step_seconds(metrics: Path, skip: int) -> float:
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    t = {r["step"]: r["seconds"] for r in rows if "seconds" in r and r.get("step", 0) > 0}
    last = max(t)
    return (t[last] - t[skip]) / (last - skip)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--algos", default="grpo,brpo,mdpo,icpo,grpo_pp")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--grpo-steps", type=int, default=381, help="GRPO's steps in --minutes alone (README)")
    args = ap.parse_args()
    setup()
    from steerable.rl.algos import ALGOS
    from steerable.rl.run import RLRunConfig, train_rl

    algos = args.algos.split(",")
    if "grpo" not in algos:
        algos.insert(0, "grpo")
    times: dict[str, list[float]] = {a: [] for a in algos}
    for _ in range(args.rounds):
        for name in algos:
            per_batch = ALGOS[name].iterations * ALGOS[name].minibatches
            steps = max(args.steps, 2 * per_batch) // per_batch * per_batch
            with tempfile.TemporaryDirectory() as tmp:
                cfg = RLRunConfig(
                    out=tmp, algo=name, steps=steps, minutes=None, eval_every=0, eval_n=1, save_every=10**6
                )
                train_rl(cfg, progress=False)
                times[name].append(step_seconds(Path(tmp) / "metrics.jsonl", per_batch))
    base = statistics.median(times["grpo"])
    print(f"{'algo':>12} {'s/step':>8} {'x grpo':>7} {'steps at grpo pace':>19}")
    for name in algos:
        t = statistics.median(times[name])
        print(f"{name:>12} {t:8.2f} {t / base:7.2f} {round(args.grpo_steps * base / t):19d}")
    print("(medians over rounds; the machine may be shared: the ratios are what counts)")


if __name__ == "__main__":
    main()
