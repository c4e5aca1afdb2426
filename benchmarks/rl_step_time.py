"""CPU seconds per training step of RL algorithms against GRPO's, side by side in one run, through ``train_rl``.

Every algorithm trains a fresh copy of the built-in model on ``builtin:medium`` (4 prompts x 8 rollouts,
the README's settings) for ``--steps`` optimiser steps, in rotation over ``--rounds`` rounds. A step is
timed in CPU seconds of this process (``time.process_time`` around TRL's ``training_step``: generation,
scoring, the estimator's extra passes, loss and backward), which other processes' load barely moves, unlike
wall time on a shared machine; the first generated batch is left out (warm-up), and MDPO's 4 optimiser steps
per batch are averaged over whole batches. Prints each algorithm's CPU seconds per step, its ratio to GRPO's,
and the steps a run would reach in the time GRPO took for ``--grpo-steps`` steps (381 in 10 minutes alone,
README): how the README's ``--steps`` budgets are chosen when the machine is shared.

    OMP_NUM_THREADS=1 python benchmarks/rl_step_time.py --algos grpo,brpo,mdpo,icpo,grpo_pp [--steps 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from _common import setup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--algos", default="grpo,brpo,mdpo,icpo,grpo_pp")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--grpo-steps", type=int, default=381, help="GRPO's steps in 10 minutes alone (README)")
    args = ap.parse_args()
    setup()
    import steerable.rl.trainer as trainer_module
    from steerable.rl.algos import ALGOS
    from steerable.rl.run import RLRunConfig, train_rl

    cpu: list[float] = []

    class Timed(trainer_module.SteerableGRPOTrainer):
        def training_step(self, *a, **kw):
            t = time.process_time()
            out = super().training_step(*a, **kw)
            cpu.append(time.process_time() - t)
            return out

    trainer_module.SteerableGRPOTrainer = Timed  # train_rl imports the trainer when a run starts: it gets this one
    algos = args.algos.split(",")
    if "grpo" not in algos:
        algos.insert(0, "grpo")
    times: dict[str, list[float]] = {a: [] for a in algos}
    for _ in range(args.rounds):
        for name in algos:
            per_batch = ALGOS[name].iterations * ALGOS[name].minibatches
            steps = max(args.steps, 2 * per_batch) // per_batch * per_batch
            cpu.clear()
            with tempfile.TemporaryDirectory() as tmp:
                cfg = RLRunConfig(
                    out=tmp, algo=name, steps=steps, minutes=None, eval_every=0, eval_n=1, save_every=10**6
                )
                train_rl(cfg, progress=False)
            times[name].append(sum(cpu[per_batch:]) / len(cpu[per_batch:]))
            print(f"{name}: {times[name][-1]:.2f} CPU s/step over {len(cpu) - per_batch} steps", flush=True)
    base = statistics.median(times["grpo"])
    print(f"{'algo':>12} {'CPU s/step':>11} {'x grpo':>7} {'steps in grpo time':>19}")
    for name in algos:
        t = statistics.median(times[name])
        print(f"{name:>12} {t:11.2f} {t / base:7.2f} {round(args.grpo_steps * base / t):19d}")


if __name__ == "__main__":
    main()
