"""Return against trajectories sampled for REINFORCE, STORM-PG, N-PG-IGT, HARPG and N-HARPG, side by side.

Each (env, method, seed) is one ``train_pg`` run with the step sizes of ``npg.DEFAULT_STEP`` (tuned on seed 100,
not a benchmark seed) and the same trajectory budget; the evaluation return (10 stochastic episodes on fixed
seeds) is read at the checkpoints. Prints mean +- standard error over seeds per checkpoint, the mechanism
logs (STORM-PG's importance weights, IGT's extrapolation factor, HARPG's Hessian-vector norm), and draws the
curves to ``--plot``. ``harpg-v0`` / ``n_harpg-v0`` are the ablation with HARPG's Hessian-vector
correction set to 0 (the second trajectory still drawn and counted). Runs are written to ``--runs`` as they
finish, so an interrupted benchmark resumes.

    OMP_NUM_THREADS=1 python benchmarks/control_pg.py --seeds 0,1,2,3,4 --trajectories 1000 --plot docs/control_pg.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from unittest.mock import patch

import numpy as np
import torch

from steerable.control.training.npg import ESTIMATORS, PGConfig, PGProblem, train_pg


def run_one(runs: Path, env: str, method: str, seed: int, trajectories: int, every: int) -> dict:
    path = runs / f"{env}_{method}_{seed}_{trajectories}.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    base = method.removesuffix("-v0")
    cfg = PGConfig(env=env, method=base, trajectories=trajectories, seed=seed, eval_every=every)
    if method.endswith("-v0"):  # the ablation: HARPG's Hessian-vector correction v_t set to 0, tau^ still drawn
        with patch.object(PGProblem, "hessian_vector", lambda self, theta, traj, v: torch.zeros_like(v)):
            r = train_pg(cfg)
    else:
        r = train_pg(cfg)
    r["seconds"] = time.perf_counter() - t0
    r.pop("train_returns")
    path.write_text(json.dumps(r))
    return r


def at(curve: list, n: int) -> float:
    """The evaluation return at the first checkpoint with at least ``n`` trajectories (NaN if it diverged before)."""
    return next((ret for k, ret in curve if k >= n), math.nan)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", default="CartPole-v1,Pendulum-v1")
    p.add_argument("--methods", default="reinforce,storm_pg,n_pg_igt,harpg,n_harpg")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--trajectories", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--checkpoints", default="100,250,500,1000")
    p.add_argument("--runs", default="runs/control_pg")
    p.add_argument("--plot", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    methods = a.methods.split(",")
    if unknown := [m for m in methods if m.removesuffix("-v0") not in ESTIMATORS]:
        raise SystemExit(f"unknown method {unknown[0]!r}: use {', '.join(ESTIMATORS)} (harpg-v0, n_harpg-v0: v_t = 0)")
    seeds = [int(s) for s in a.seeds.split(",")]
    checks = [int(c) for c in a.checkpoints.split(",")]
    runs = Path(a.runs)
    runs.mkdir(parents=True, exist_ok=True)
    results = {}
    for env in a.envs.split(","):
        for m in methods:
            results[env, m] = [run_one(runs, env, m, s, a.trajectories, a.eval_every) for s in seeds]

    for env in a.envs.split(","):
        print(f"\n{env}: evaluation return (mean +- s.e. over seeds {a.seeds}) at trajectories sampled")
        print("| method | " + " | ".join(str(c) for c in [0, *checks]) + " | iterations | diverged | s/run | logs |")
        print("|---" * (len(checks) + 6) + "|")
        for m in methods:
            rs = results[env, m]
            cells = []
            for c in [0, *checks]:
                v = np.array([at(r["curve"], c) for r in rs])
                v = v[np.isfinite(v)]
                se = v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else math.nan
                cells.append(f"{v.mean():.1f} +- {se:.1f}" if len(v) else "-")
            logs = {k: round(float(np.mean([r["metrics"][k] for r in rs if k in r["metrics"]])), 3)
                    for k in rs[0]["metrics"]}  # fmt: skip
            its = int(np.mean([r["iterations"] for r in rs]))
            div = sum(r["diverged"] for r in rs)
            secs = np.mean([r["seconds"] for r in rs])
            print(f"| {m} | " + " | ".join(cells) + f" | {its} | {div}/{len(rs)} | {secs:.0f} | {logs} |")

    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        envs = a.envs.split(",")
        fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4), squeeze=False)
        for ax, env in zip(axes[0], envs, strict=True):
            for m in methods:
                xs = [k for k, _ in results[env, m][0]["curve"]]
                ys = np.array([[at(r["curve"], x) for x in xs] for r in results[env, m]])
                mean = np.nanmean(ys, 0)
                se = np.nanstd(ys, 0, ddof=1) / math.sqrt(len(ys)) if len(ys) > 1 else 0 * mean
                ax.plot(xs, mean, label=m)
                ax.fill_between(xs, mean - se, mean + se, alpha=0.2)
            ax.set(title=env, xlabel="trajectories sampled", ylabel="evaluation return")
            ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)
        print(f"\nplot: {a.plot}")


if __name__ == "__main__":
    main()
