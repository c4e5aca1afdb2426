"""Behaviour cloning of a chunked-action diffusion policy: DDPM's epsilon loss on action chunks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from steerable.config import check, opt
from steerable.control.policies.diffusion_policy import TRAIN_TIMESTEPS, DiffusionPolicy
from steerable.control.policies.normalize import ActionScale, ObsScale
from steerable.control.worlds.data import Dataset
from steerable.diffusion.train import epsilon_loss
from steerable.errors import ConfigError
from steerable.provenance import provenance
from steerable.training import CHECKPOINT, Budget, cosine, train_loop


@dataclass(frozen=True)
class PolicyConfig:
    """How ``steerable control train-policy`` trains a diffusion policy (the CLI's flags are these fields)."""

    data: str = opt(..., "Dataset .npz (from `steerable control data`).")
    out: str = opt(..., "Directory to write the policy to.")
    env: str = opt("builtin:pointnav", "The env the data came from (for its action bounds).")
    horizon: int = opt(8, "Actions per predicted chunk (H).", ge=1, le=64)
    execute: int = opt(4, "Actions of each chunk executed before asking again.", ge=1, le=64)
    history: int = opt(0, "Earlier observations in the condition (0: the current one only).", ge=0, le=64)
    stride: int = opt(1, "Steps between history frames.", ge=1, le=64)
    past: int = opt(0, "Past actions predicted with the chunk (past-token prediction; 0: none).", ge=0, le=64)
    steps_inference: int = opt(10, "DDIM steps at inference.", ge=1, le=TRAIN_TIMESTEPS)
    hidden: int = opt(256, "Denoiser width.", ge=8, le=4096)
    layers: int = opt(3, "Denoiser hidden layers.", ge=1, le=8)
    minutes: float = opt(4.0, "Wall-time budget; the LR schedule spans it.", gt=0, le=24 * 60)
    steps: int | None = opt(None, "Exact number of steps (reproducible); overrides --minutes.", ge=1, le=10_000_000)
    batch_size: int = opt(256, "Chunks per step.", ge=1, le=65_536)
    lr: float = opt(1e-3, "Peak AdamW learning rate, cosine-decayed to 1%.", gt=0, le=1)
    seed: int = opt(0, "Seed.", ge=0)
    threads: int = opt(1, "torch threads (1 is fastest for this size on a shared machine).", ge=1, le=256)

    def __post_init__(self) -> None:
        check(self, "train-policy: ")
        if self.execute > self.horizon:
            raise ConfigError(f"train-policy: execute must be <= horizon (got {self.execute} > {self.horizon})")


def training_chunks(data: Dataset, horizon: int, history: int, stride: int, past: int):
    """Per row t: observation frames o_{t - k*stride} (k = history..0, clamped at the episode start) and the
    actions a_{t - k*stride} (k = past..1) then a_{t:t+H}, clamped to the episode (its first action repeated
    before it, its last after it)."""
    n_rows = len(data)
    frames = np.zeros((n_rows, history + 1, data.obs.shape[1]), np.float32)
    acts = np.zeros((n_rows, past + horizon, data.action.shape[1]), np.float32)
    for sl in data.episode_slices():
        length = sl.stop - sl.start
        i = np.arange(length)
        back = np.clip(i[:, None] - stride * np.arange(history, -1, -1)[None, :], 0, length - 1)
        frames[sl] = data.obs[sl][back]
        offsets = np.r_[-stride * np.arange(past, 0, -1), np.arange(horizon)]
        span = np.clip(i[:, None] + offsets[None, :], 0, length - 1)
        acts[sl] = data.action[sl][span]
    return frames, acts


def train_policy(cfg: PolicyConfig, data: Dataset, action_scale: ActionScale, progress: bool = True):
    """BC by the DDPM epsilon loss on chunks; returns the policy and its training record."""
    from diffusers import DDPMScheduler

    from steerable.diffusion.denoiser import MLPDenoiser

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    obs_scale = ObsScale.fit(data.obs)
    frames, acts = training_chunks(data, cfg.horizon, cfg.history, cfg.stride, cfg.past)
    cond = obs_scale(torch.from_numpy(frames)).reshape(len(frames), -1)  # [n, (history+1)*obs_dim]
    x0_all = action_scale.normalize(torch.from_numpy(acts))  # [n, past+H, act_dim]
    den = MLPDenoiser(
        sample_shape=tuple(x0_all.shape[1:]),
        condition_dim=cond.shape[1],
        hidden=cfg.hidden,
        layers=cfg.layers,
        time_dim=32,
    )
    sched = DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    abar = sched.alphas_cumprod.float()
    opt_ = torch.optim.AdamW(den.parameters(), lr=cfg.lr, weight_decay=1e-4)

    def loss() -> torch.Tensor:
        i = torch.randint(len(x0_all), (cfg.batch_size,), generator=g)
        return epsilon_loss(den, x0_all[i], abar, g, cond[i])

    run = train_loop(
        den,
        opt_,
        loss,
        lambda step, spent: cosine(spent, cfg.lr),
        Budget(cfg.minutes, cfg.steps),
        label="train-policy",
        data=g,
        checkpoint=Path(cfg.out) / CHECKPOINT,
        settings=asdict(cfg),
        log_every=2000,
        progress=progress,
    )
    policy = DiffusionPolicy(
        den,
        sched,
        obs_scale,
        action_scale,
        cfg.horizon,
        cfg.execute,
        cfg.history,
        cfg.stride,
        cfg.past,
        cfg.steps_inference,
    )
    record = {
        **provenance(cfg, "control train-policy", unused=("minutes",) if cfg.steps else ()),
        "data_episodes": data.episodes,
        "data_success": round(float(data.success.mean()), 4),
        "parameters": sum(p.numel() for p in den.parameters()),
        "steps": run.step,
        "wall_seconds": round(run.seconds, 1),
        "final_loss_ema": round(run.loss, 4),
        "history": run.history,
    }
    return policy, record
