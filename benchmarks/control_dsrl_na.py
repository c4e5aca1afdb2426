"""DSRL-NA against DSRL-SAC on PointNav at equal environment steps and at equal training wall time.

Each (method, seed) is one ``steerable control dsrl`` run with default flags (``--variant na`` or ``sac``), the
same seed and the same success checks (``--eval-episodes`` seeded episodes every ``--eval-every`` env steps, the
same episodes for both). DSRL-SAC also runs on to ``--sac-steps`` so that it can be read at DSRL-NA's training
wall time: training seconds are the run's seconds less the time spent in its success checks (timed here).
Prints per checkpoint the success mean over seeds with two standard errors: over seeds (spread of the runs) and
over evaluation episodes (binomial, pooled). Runs are written to ``--runs`` as they finish, so an interrupted
benchmark resumes.

    OMP_NUM_THREADS=1 python benchmarks/control_dsrl_na.py --seeds 0,1,2 --env-steps 10000 --sac-steps 30000
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from unittest.mock import patch

import numpy as np

from _common import setup

POLICY = "src/steerable/control/builtin/pointnav/policy"


def run_one(runs: Path, method: str, seed: int, env_steps: int, every: int, episodes: int) -> dict:
    path = runs / f"{method}_{seed}_{env_steps}_{every}_{episodes}.json"
    if path.exists():
        return json.loads(path.read_text())
    import steerable.control.evaluate as ev
    from steerable.control.training.dsrl import DSRLConfig, train_dsrl
    from steerable.control.training.dsrl_na import train_dsrl_na

    eval_seconds: list[float] = []
    inner = ev.evaluate

    def timed(*a, **k):
        t = time.perf_counter()
        out = inner(*a, **k)
        eval_seconds.append(time.perf_counter() - t)
        return out

    cfg = DSRLConfig(policy=POLICY, out=str(runs / f"{method}_{seed}"), variant=method, env_steps=env_steps,
                     eval_every=every, eval_episodes=episodes, seed=seed)  # fmt: skip
    with patch.object(ev, "evaluate", timed):
        rec = (train_dsrl_na if method == "na" else train_dsrl)(cfg, progress=False)
    for row, spent in zip(rec["curve"], np.cumsum(eval_seconds), strict=True):  # a row's seconds include its check
        row["train_seconds"] = round(row["seconds"] - float(spent), 1)
    rec["train_seconds"] = round(rec["wall_seconds"] - float(np.sum(eval_seconds)), 1)
    path.write_text(json.dumps(rec))
    return rec


def line(label: str, rows: list[dict], episodes: int) -> str:
    s = np.array([r["success"] for r in rows])
    se_seeds = float(s.std(ddof=1) / math.sqrt(len(s))) if len(s) > 1 else math.nan
    p = float(s.mean())
    se_eps = math.sqrt(p * (1 - p) / (episodes * len(s)))
    secs = np.mean([r.get("train_seconds", math.nan) for r in rows])
    steps = np.mean([r["env_steps"] for r in rows])
    per = " ".join(f"{x:.2f}" for x in s)
    return f"| {label} | {steps:.0f} | {secs:.0f} | {p:.3f} | {se_seeds:.3f} | {se_eps:.3f} | {per} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--env-steps", type=int, default=10_000)
    p.add_argument("--sac-steps", type=int, default=30_000, help="DSRL-SAC runs on to here for the equal-wall row.")
    p.add_argument("--eval-every", type=int, default=2500)
    p.add_argument("--eval-episodes", type=int, default=100)
    p.add_argument("--runs", default="runs/control_dsrl_na")
    a = p.parse_args()
    setup()
    runs = Path(a.runs)
    runs.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in a.seeds.split(",")]
    na = [run_one(runs, "na", s, a.env_steps, a.eval_every, a.eval_episodes) for s in seeds]
    sac = [run_one(runs, "sac", s, max(a.sac_steps, a.env_steps), a.eval_every, a.eval_episodes) for s in seeds]
    print("| run | env steps | train s | success | SE seeds | SE episodes | per seed |")
    print("|---|---|---|---|---|---|---|")
    for k in range(len(na[0]["curve"])):
        print(line(f"DSRL-NA @ check {k}", [r["curve"][k] for r in na], a.eval_episodes))
        print(line(f"DSRL-SAC @ check {k}", [r["curve"][k] for r in sac], a.eval_episodes))
    # equal wall time: each SAC seed's last check whose training seconds are within that NA seed's
    walls = [r["train_seconds"] for r in na]
    at_wall = [max((row for row in r["curve"] if row["train_seconds"] <= w), key=lambda row: row["env_steps"])
               for r, w in zip(sac, walls, strict=True)]  # fmt: skip
    print(line("DSRL-NA, end", [r["curve"][-1] for r in na], a.eval_episodes))
    print(line("DSRL-SAC at DSRL-NA's training seconds", at_wall, a.eval_episodes))
    print(line("DSRL-SAC, end", [r["curve"][-1] for r in sac], a.eval_episodes))
    for name, rs in (("na", na), ("sac", sac)):
        for r in rs:
            keys = ("alpha", "entropy", "q_data", "q_w_pi", "q_pi", "loss_qa", "loss_qw")
            keys += ("critic_steps", "distill_steps")
            print(name, r["config"]["seed"], "final:", {k: r["curve"][-1][k] for k in keys if k in r["curve"][-1]},
                  "nfe", r["nfe"], "wall", r["wall_seconds"], "train s", r["train_seconds"])  # fmt: skip


if __name__ == "__main__":
    main()
