"""IQL training of :class:`~steerable.control.policies.critics.IQLCritic`: ``steerable control train-q``."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from steerable.config import check, opt
from steerable.control.policies.critics import IQLCritic
from steerable.control.policies.normalize import ActionScale, ObsScale
from steerable.control.worlds.data import Dataset
from steerable.provenance import provenance


@dataclass(frozen=True)
class TrainQConfig:
    """How ``steerable control train-q`` trains the IQL critic (the CLI's flags are these fields)."""

    data: str = opt(..., "Dataset .npz (from `steerable control data`).")
    out: str = opt(..., "Directory to write the critic to.")
    env: str = opt("builtin:pointnav", "The env the data came from (for its action bounds).")
    chunk: int = opt(1, "1: Q of the first action (V-GPS's); H: Q of the whole H-step chunk.", ge=1, le=64)
    expectile: float = opt(0.8, "IQL expectile tau for V (the paper's range 0.7-0.9).", gt=0.5, lt=1)
    gamma: float = opt(0.99, "Discount per env step.", gt=0, le=1)
    steps: int = opt(15_000, "Gradient steps.", ge=1, le=10_000_000)
    batch_size: int = opt(256, "Transitions per step.", ge=1, le=65_536)
    lr: float = opt(3e-4, "Adam learning rate.", gt=0, le=1)
    polyak: float = opt(0.005, "Target-network update rate.", gt=0, le=1)
    width: int = opt(256, "Hidden width.", ge=1, le=4096)
    depth: int = opt(2, "Hidden layers.", ge=1, le=8)
    seed: int = opt(0, "Seed.", ge=0)
    threads: int = opt(1, "torch threads.", ge=1, le=256)

    def __post_init__(self) -> None:
        check(self, "train-q: ")


def chunk_targets(data: Dataset, chunk: int, gamma: float) -> dict[str, np.ndarray]:
    """Per row t: the chunk a_{t:t+H} (the last action repeated past the episode's end), its discounted
    return R (cut at termination), the bootstrap observation s_{t+n} and its discount gamma^n (0 if terminated)."""
    n_rows, act_dim = data.action.shape
    actions = np.zeros((n_rows, chunk, act_dim), np.float32)
    ret = np.zeros(n_rows, np.float32)
    boot_obs = np.zeros_like(data.obs)
    boot_disc = np.zeros(n_rows, np.float32)
    for sl in data.episode_slices():
        a, r, nx, term = data.action[sl], data.reward[sl], data.next_obs[sl], data.terminated[sl]
        length = len(a)
        for i in range(length):
            n = min(chunk, length - i)
            idx = np.minimum(np.arange(i, i + chunk), length - 1)
            actions[sl.start + i] = a[idx]
            disc = gamma ** np.arange(n)
            ret[sl.start + i] = float((disc * r[i : i + n]).sum())
            boot_obs[sl.start + i] = nx[i + n - 1]
            boot_disc[sl.start + i] = 0.0 if term[i + n - 1] else gamma**n
    return {"actions": actions, "ret": ret, "boot_obs": boot_obs, "boot_disc": boot_disc}


def train_q(cfg: TrainQConfig, data: Dataset, action_scale: ActionScale, progress: bool = True) -> IQLCritic:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t = chunk_targets(data, cfg.chunk, cfg.gamma)
    obs = torch.from_numpy(data.obs)
    acts = action_scale.normalize(torch.from_numpy(t["actions"]))
    ret, boot_obs, boot_disc = (torch.from_numpy(t[k]) for k in ("ret", "boot_obs", "boot_disc"))
    critic = IQLCritic(
        data.obs.shape[1],
        data.action.shape[1],
        cfg.chunk,
        ObsScale.fit(data.obs),
        action_scale,
        cfg.width,
        cfg.depth,
        cfg.gamma,
    )
    target = IQLCritic(
        data.obs.shape[1],
        data.action.shape[1],
        cfg.chunk,
        critic.obs_scale,
        action_scale,
        cfg.width,
        cfg.depth,
        cfg.gamma,
    )
    target.load_state_dict(critic.state_dict())
    q_opt = torch.optim.Adam([*critic.q1.parameters(), *critic.q2.parameters()], lr=cfg.lr)
    v_opt = torch.optim.Adam(critic.v.parameters(), lr=cfg.lr)
    start, history = time.time(), []
    for step in range(1, cfg.steps + 1):
        i = torch.from_numpy(rng.integers(0, len(obs), cfg.batch_size))
        s, a = obs[i], acts[i]
        with torch.no_grad():
            q_t = target.q(s, a)
            next_v = critic.value(boot_obs[i])
        u = q_t - critic.value(s)
        v_loss = (torch.abs(cfg.expectile - (u < 0).float()) * u**2).mean()
        v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        v_opt.step()
        y = ret[i] + boot_disc[i] * next_v
        x = critic._in(s, a)
        q_loss = ((critic.q1(x).squeeze(-1) - y) ** 2).mean() + ((critic.q2(x).squeeze(-1) - y) ** 2).mean()
        q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        q_opt.step()
        with torch.no_grad():
            for p, tp in zip(critic.parameters(), target.parameters(), strict=True):
                tp.lerp_(p, cfg.polyak)
        if step % 1000 == 0 or step == cfg.steps:
            history.append(
                {
                    "step": step,
                    "seconds": round(time.time() - start, 1),
                    "q_loss": round(q_loss.item(), 5),
                    "v_loss": round(v_loss.item(), 5),
                }
            )
            if progress:
                print(history[-1], file=sys.stderr, flush=True)
    critic.eval()
    with torch.no_grad():
        mean_v = round(float(critic.value(obs[:4096]).mean()), 4) if len(obs) else math.nan
    critic.record = {  # type: ignore[attr-defined]
        **provenance(cfg, "control train-q"),
        "scores": "first action (V-GPS's)" if cfg.chunk == 1 else f"whole chunk of {cfg.chunk}",
        "wall_seconds": round(time.time() - start, 1),
        "history": history,
        "mean_v_on_data": mean_v,
    }
    return critic
