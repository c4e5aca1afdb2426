"""How close PGD's synthetic transitions are to the real data, side by side in one run.

Loads (or, when missing or made with other settings, trains) the trajectory model of ``steerable control pgd
--out DIR`` (DIR/trajectory_model), samples ``--trajectories`` unguided trajectories per seed and prints, for
real data, synthetic data and synthetic transitions with their next observations shuffled (a floor:
transitions that ignore the dynamics), PointNav's dynamics residual (mean |error| of v' = 0.98 v + 0.1 a,
p' = p + 0.1 v' and of the constant goal), the mean step |p' - p|, the mean reward, the share of terminal
transitions and the shares that break PointNav's terminal rule (missed: the next position is in an obstacle,
outside the arena or at the goal with no terminal flag; false: a terminal flag with none of these); synthetic
rows are mean +- standard error over the sampling seeds. ``--starts real`` inpaints each trajectory's first
observation with a real one.

    python benchmarks/control_pgd_data.py --run runs/pgd --trajectories 512 --seeds 0,1,2
    python benchmarks/control_pgd_data.py --run runs/pgd-abs --encoding absolute --no-pad-terminal
    python benchmarks/control_pgd_data.py --run runs/pgd-l8 --length 8 --starts real
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from steerable.control.training.pgd import (
    Transitions,
    dynamics_residual,
    read_transitions,
    sample_trajectories,
    terminal_consistency,
)
from steerable.control.training.pgd_run import PGDConfig, load_or_train_model
from steerable.control.worlds.data import DataConfig, Dataset, make_dataset
from steerable.control.worlds.envs import make_env

COLS = ("velocity", "position", "goal", "step", "reward_mean", "terminal_share", "missed", "false")
ENV = make_env("builtin:pointnav")
ENV = getattr(ENV, "unwrapped", ENV)


def stats(t: Transitions) -> dict:
    return (
        dynamics_residual(t)
        | terminal_consistency(t, ENV.collides, ENV.config.goal_radius)
        | {
            "step": float(np.abs(t.next_obs[:, :2] - t.obs[:, :2]).mean()),
            "reward_mean": float(t.reward.mean()),
            "terminal_share": float(t.terminated.mean()),
        }
    )


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} +- {np.std(values, ddof=1) / np.sqrt(len(values)):.4f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="the --out directory of `steerable control pgd`")
    ap.add_argument("--data", default=None, help="the dataset it was trained on (default: the in-memory one)")
    ap.add_argument("--trajectories", type=int, default=512)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--encoding", default="delta")
    ap.add_argument("--no-pad-terminal", action="store_true")
    ap.add_argument("--starts", default="sampled", choices=("sampled", "real"))
    ap.add_argument("--length", type=int, default=16)
    ap.add_argument("--diffusion-steps", type=int, default=4000)
    ap.add_argument("--diffusion-hidden", type=int, default=256)
    ap.add_argument("--diffusion-layers", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    data = Dataset.load(a.data) if a.data else make_dataset(DataConfig(out="-", episodes=400, seed=0))
    cfg = PGDConfig(data=a.data, out=a.run, length=a.length, encoding=a.encoding, pad_terminal=not a.no_pad_terminal,
                    diffusion_steps=a.diffusion_steps, diffusion_hidden=a.diffusion_hidden,
                    diffusion_layers=a.diffusion_layers)  # fmt: skip
    model, layout, record = load_or_train_model(cfg, data)
    synth, shuffled = [], []
    for seed in (int(s) for s in a.seeds.split(",")):
        starts = None
        if a.starts == "real":
            starts = data.obs[np.random.default_rng(seed).integers(len(data), size=a.trajectories)]
        traj, _ = sample_trajectories(model, layout, a.trajectories, a.length, a.steps, seed, starts=starts)
        t = read_transitions(traj, layout, np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
        synth.append(stats(t))
        mixed = np.random.default_rng(seed).permutation(t.next_obs)
        shuffled.append(stats(Transitions(t.obs, t.action, t.reward, mixed, t.terminated)))
    print(f"model: {a.encoding} observations, terminals padded: {cfg.pad_terminal}, starts {a.starts}, {record}")
    rows = {"real": [stats(Transitions.from_dataset(data))], "synthetic (unguided)": synth,
            "synthetic, next obs shuffled": shuffled}  # fmt: skip
    print(
        "| data | velocity residual | position residual | goal residual | mean step | mean reward | terminal share "
        "| missed terminal | false terminal |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rs in rows.items():
        print(f"| {name} | " + " | ".join(cell([r[c] for r in rs]) for c in COLS) + " |")


if __name__ == "__main__":
    main()
