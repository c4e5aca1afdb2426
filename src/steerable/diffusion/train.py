"""Train a built-in denoiser from scratch: one plain torch loop (``steerable builtin train-diffusion``).

DDPM training (Ho et al., "Denoising Diffusion Probabilistic Models", eq. 14):
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps with t uniform over 1,000 steps of
diffusers' ``DDPMScheduler`` (``squaredcos_cap_v2``, the cosine schedule of
Nichol & Dhariwal), loss |eps - eps_theta(x_t, t)|^2. AdamW, cosine learning
rate over the run, in :func:`steerable.training.train_loop` (a checkpoint in
the directory every minute and on Ctrl-C: a rerun resumes). The directory
written is a diffusers model directory (``config.json`` +
``diffusion_pytorch_model.safetensors``) plus the
scheduler's config, the digits reward's weights (a logistic regression on half
A of the data, see :mod:`steerable.diffusion.digits`) and ``training.json``
(command, configuration, steps, wall time, losses, checks).

One thread by default: a model this small is launch-bound, and on a shared
2-core machine two threads ran it about 8x slower than one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from steerable.config import check, opt
from steerable.provenance import provenance
from steerable.training import CHECKPOINT, Budget, cosine, train_loop

World = Literal["digits", "mixture"]
#: the denoiser's size per world: (hidden, layers, time_dim)
SIZES = {"digits": (256, 3, 64), "mixture": (128, 3, 32)}


@dataclass(frozen=True)
class TrainDiffusionConfig:
    """How ``steerable builtin train-diffusion`` trains a built-in denoiser (the CLI's flags are these fields)."""

    out: str = opt(..., "Directory to write the model to.")
    world: World = opt("digits", "Which built-in world: digits (8x8 images) or mixture (2-D eight Gaussians).")
    minutes: float = opt(3.0, "Wall-time budget; the LR schedule spans it.", gt=0, le=24 * 60)
    steps: int | None = opt(None, "Exact number of steps (reproducible); overrides --minutes.", ge=1, le=10_000_000)
    seed: int = opt(0, "Seed for initialisation, batches and noise.", ge=0)
    batch_size: int = opt(256, "Samples per step.", ge=1, le=65_536)
    lr: float = opt(2e-3, "Peak learning rate (AdamW), cosine-decayed to 1% over the run.", gt=0, le=1.0)
    threads: int = opt(1, "torch threads (1: fastest for this size on a shared machine).", ge=1, le=256)

    def __post_init__(self) -> None:
        check(self)


def _data(world: str, n: int, g: torch.Generator, pool: torch.Tensor | None) -> torch.Tensor:
    if world == "digits":
        return pool[torch.randint(len(pool), (n,), generator=g)]
    from steerable.diffusion.mixture import sample_data

    return sample_data(n, g)


def fit_digits_reward() -> tuple[dict[str, torch.Tensor], dict]:
    """The logistic regression on half A: its weights and its accuracy on half B (deterministic: lbfgs)."""
    from sklearn.linear_model import LogisticRegression

    from steerable.diffusion.digits import load_data, split

    x, y = load_data()
    a, b = split()
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(x[a], y[a])
    weights = {
        "weight": torch.tensor(lr.coef_, dtype=torch.float32).contiguous(),
        "bias": torch.tensor(lr.intercept_, dtype=torch.float32),
    }
    return weights, {"reward_accuracy_half_b": round(float(lr.score(x[b], y[b])), 4)}


def epsilon_loss(model, x0: torch.Tensor, abar: torch.Tensor, g: torch.Generator, condition=None) -> torch.Tensor:
    """DDPM's loss ||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t)||^2 on a batch ``x0``, with
    t ~ U{0 .. len(abar) - 1} and eps ~ N(0, I) drawn from ``g`` in that order (the denoisers and the diffusion
    policy train on it; ``condition`` is the policy's observations)."""
    t = torch.randint(0, len(abar), (x0.shape[0],), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    a = abar[t].reshape(-1, *([1] * (x0.ndim - 1)))
    return ((model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, condition).sample - eps) ** 2).mean()


def train(cfg: TrainDiffusionConfig, progress: bool = True) -> dict:
    from diffusers import DDPMScheduler
    from safetensors.torch import save_file

    from steerable.diffusion.denoiser import MLPDenoiser

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    pool = None
    if cfg.world == "digits":
        from steerable.diffusion.digits import SHAPE, load_data

        pool = torch.from_numpy(load_data()[0])
    else:
        from steerable.diffusion.mixture import SHAPE
    hidden, layers, time_dim = SIZES[cfg.world]
    model = MLPDenoiser(sample_shape=SHAPE, hidden=hidden, layers=layers, time_dim=time_dim)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    abar = sched.alphas_cumprod.float()
    opt_ = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)

    def loss() -> torch.Tensor:
        return epsilon_loss(model, _data(cfg.world, cfg.batch_size, g, pool), abar, g)

    run = train_loop(
        model,
        opt_,
        loss,
        lambda step, spent: cosine(spent, cfg.lr),
        Budget(cfg.minutes, cfg.steps),
        label="train-diffusion",
        data=g,
        checkpoint=out / CHECKPOINT,
        settings=asdict(cfg),
        log_every=2000,
        progress=progress,
    )
    model.save_pretrained(out)
    sched.save_pretrained(out)
    record: dict = {
        **provenance(cfg, "builtin train-diffusion", unused=("minutes",) if cfg.steps else ()),  # --steps rules
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": run.step,
        "wall_seconds": round(run.seconds, 1),
        "final_loss_ema": round(run.loss, 4),
        "history": run.history,
    }
    if cfg.world == "digits":
        weights, info = fit_digits_reward()
        save_file(weights, str(out / "reward.safetensors"))
        record.update(info)
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
