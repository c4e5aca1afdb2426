"""How close PGD's synthetic transitions are to the real data, side by side in one run.

Loads the trajectory model ``steerable control pgd --out DIR`` saved (DIR/trajectory_model), samples
``--trajectories`` unguided trajectories and prints, for real data, synthetic data and synthetic transitions
with their next observations shuffled (a floor: transitions that ignore the dynamics), PointNav's dynamics
residual (mean |error| of v' = 0.98 v + 0.1 a, p' = p + 0.1 v' and of the constant goal), the mean reward and
the share of terminal transitions, with the mean step |p' - p| for scale.

    python benchmarks/control_pgd_data.py --run runs/pgd --trajectories 512 --seed 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from steerable.control.training.pgd import (
    TrajectoryLayout,
    Transitions,
    dynamics_residual,
    read_transitions,
    sample_trajectories,
)
from steerable.control.worlds.data import DataConfig, Dataset, make_dataset
from steerable.diffusion.denoiser import MLPDenoiser


def stats(t: Transitions) -> dict:
    return dynamics_residual(t) | {
        "step": round(float(np.abs(t.next_obs[:, :2] - t.obs[:, :2]).mean()), 4),
        "reward_mean": round(float(t.reward.mean()), 4),
        "terminal_share": round(float(t.terminated.mean()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="the --out directory of `steerable control pgd`")
    ap.add_argument("--data", default=None, help="the dataset it was trained on (default: the in-memory one)")
    ap.add_argument("--trajectories", type=int, default=512)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    made = json.loads(Path(f"{a.run}/trajectory_model/made.json").read_text())
    data = Dataset.load(a.data) if a.data else make_dataset(DataConfig(out="-", episodes=400, seed=0))
    layout = TrajectoryLayout.fit(data)
    model = MLPDenoiser.from_pretrained(f"{a.run}/trajectory_model").eval()
    length = made["key"]["length"]
    traj, _ = sample_trajectories(model, layout, a.trajectories, length, a.steps, a.seed)
    synth = read_transitions(traj, layout, np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    shuffled = np.random.default_rng(a.seed).permutation(synth.next_obs)
    rows = {
        "real": stats(Transitions.from_dataset(data)),
        "synthetic (unguided)": stats(synth),
        "synthetic, next obs shuffled": stats(
            Transitions(synth.obs, synth.action, synth.reward, shuffled, synth.terminated)
        ),
    }
    print("| data | velocity residual | position residual | goal residual | mean step | mean reward | terminal share |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['velocity']} | {r['position']} | {r['goal']} | {r['step']} | {r['reward_mean']} "
            f"| {r['terminal_share']} |"
        )


if __name__ == "__main__":
    main()
