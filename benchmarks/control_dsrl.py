"""DSRL-SAC on PointNav: arms (flag sets) x seeds, each a `steerable control dsrl` run, side by side.

    python benchmarks/control_dsrl.py --arms default --seeds 0,1,2 --env-steps 50000 --eval-every 5000 \\
        --eval-episodes 100
    python benchmarks/control_dsrl.py --arms default,utd2,tau0.02,nstep3,box1,gamma0.95 --seeds 0 \\
        --env-steps 20000 --eval-every 5000 --eval-episodes 50

An arm is a name from :data:`ARMS` (its DSRLConfig overrides). Each run writes
``--runs DIR/ARM-sSEED/training.json``; a rerun reuses finished runs, so an
interrupted benchmark resumes. Printed per arm: success at each check (mean
over seeds), success over the last ``--last`` env steps (each seed's checks in
that window averaged, then mean +- standard error over seeds, min-max), and the
overestimation at the end: Q on buffer noise against the Monte-Carlo return
those chunks earned (``sac_diagnostics``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ARMS: dict[str, dict] = {
    "default": {},
    "utd0.125": {"gradient_steps": 2},
    "utd2": {"gradient_steps": 32},
    "critics10": {"critics": 10},
    "no-layernorm": {"layer_norm": False},
    "tau0.02": {"tau": 0.02},
    "tau0.001": {"tau": 0.001},
    "nstep3": {"n_steps": 3},
    "box1": {"magnitude": 1.0},
    "box0.5": {"magnitude": 0.5},
    "gamma0.95": {"gamma": 0.95},
    "gamma0.9": {"gamma": 0.9},
    "old": {"tau": 0.005, "n_steps": 1, "magnitude": 1.5, "gamma": 0.99},  # the defaults before this benchmark
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="src/steerable/control/builtin/pointnav/policy")
    ap.add_argument("--arms", default="default")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--env-steps", type=int, default=50_000)
    ap.add_argument("--eval-every", type=int, default=5000)
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--last", type=int, default=10_000, help="the window (env steps) whose checks are 'stable'")
    ap.add_argument("--runs", default="runs/control_dsrl")
    ap.add_argument("--set", action="append", default=[], help="NAME=VALUE on every arm (JSON values)")
    args = ap.parse_args()

    import numpy as np

    from steerable.control.training.dsrl import DSRLConfig, train_dsrl

    common = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    seeds = [int(s) for s in args.seeds.split(",")]
    table = []
    for arm in args.arms.split(","):
        curves = []
        for seed in seeds:
            out = Path(args.runs) / f"{arm}-s{seed}"
            rec_path = out / "training.json"
            if rec_path.exists():
                rec = json.loads(rec_path.read_text())
            else:
                cfg = DSRLConfig(
                    policy=args.policy, out=str(out), env_steps=args.env_steps, eval_every=args.eval_every,
                    eval_episodes=args.eval_episodes, seed=seed, **{**common, **ARMS[arm]},
                )  # fmt: skip
                rec = train_dsrl(cfg, progress=True)
            curves.append(rec)
            c = rec["curve"]
            print(
                f"{arm} seed {seed}: " + " ".join(f"{p['success']:.2f}" for p in c) + f" | q_data {c[-1].get('q_data')}"
                f" mc {c[-1].get('mc')} q_pi {c[-1].get('q_pi')} | {rec['wall_seconds']} s",
                flush=True,
            )
        steps = [p["env_steps"] for p in curves[0]["curve"]]
        succ = np.array([[p["success"] for p in r["curve"]] for r in curves])  # [seeds, checks]
        last = np.array([[p["success"] for p in r["curve"] if p["env_steps"] >= args.env_steps - args.last]
                         for r in curves]).mean(axis=1)  # fmt: skip
        final = [r["curve"][-1] for r in curves]
        table.append((arm, steps, succ.mean(axis=0), last, final, [r["wall_seconds"] for r in curves]))

    n = len(seeds)
    print(f"\n{n} seed(s), {args.eval_episodes} episodes per check; 'last': checks at >= {args.env_steps - args.last}")
    print("| arm | success by check (mean over seeds) | last window, mean +- se (min-max) | q_data | mc | q_pi | s |")
    print("|---|---|---|---|---|---|---|")
    for arm, _, mean, last, final, secs in table:
        se = last.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
        q = [np.mean([f.get(k) if f.get(k) is not None else np.nan for f in final]) for k in ("q_data", "mc", "q_pi")]
        print(
            f"| {arm} | {' '.join(f'{m:.2f}' for m in mean)} | {last.mean():.3f} +- {se:.3f} "
            f"({last.min():.2f}-{last.max():.2f}) | {q[0]:.3f} | {q[1]:.3f} | {q[2]:.3f} | {np.mean(secs):.0f} |"
        )
    print("checks at env steps:", steps)


if __name__ == "__main__":
    main()
