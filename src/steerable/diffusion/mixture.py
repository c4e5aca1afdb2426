"""The built-in 2-D world: eight Gaussians on a circle, a reward whose tilted target is known exactly.

Data: p(x) = (1/8) sum_k N(x; mu_k, s^2 I), mu_k = R (cos 2 pi k/8, sin 2 pi k/8),
R = 0.8, s = 0.1 (inside [-1, 1], modes six standard deviations apart).

Reward: r(x) = -|x - c|^2 / (2 rho^2) with c = (0.5, 0) and rho^2 = 2.5.
Tilting a Gaussian by exp(lambda r) keeps it Gaussian, so the target
pi(x) = p(x) exp(lambda r(x)) / Z is again a mixture of eight Gaussians:

    precision P = 1/s^2 + lambda/rho^2,   mean m_k = (mu_k / s^2 + lambda c / rho^2) / P,   var 1/P,
    weight w_k  proportional to  N(mu_k; c, (s^2 + rho^2/lambda) I).

At lambda = 10 (FK's default) the target puts most mass on the mode nearest c
and its two neighbours, so a sampler (FK, DTS) can match it while best-of-N's
argmax piles onto one point. Distances: an unbiased MMD^2 with a sum of RBF
kernels, and the total variation between the samples' nearest-mode histogram
and the target's weights. The trained denoiser is not exactly p, so the base
sampler's distance to p itself (``base_distance``) is the floor to read
against.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import torch

BUILTIN = Path(__file__).parent / "builtin" / "mixture"
SHAPE = (2,)
RADIUS, STD, MODES = 0.8, 0.1, 8
CENTER = (0.5, 0.0)
RHO2 = 2.5
BANDWIDTHS = (0.05, 0.1, 0.2, 0.5)


def means() -> torch.Tensor:
    a = 2 * math.pi * torch.arange(MODES, dtype=torch.float64) / MODES
    return RADIUS * torch.stack([torch.cos(a), torch.sin(a)], dim=1)  # [8, 2]


def sample_data(n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` draws from the untilted mixture p, ``[n, 2]`` float32."""
    k = torch.randint(MODES, (n,), generator=g)
    return (means()[k] + STD * torch.randn(n, 2, generator=g, dtype=torch.float64)).float()


def tilted(lam: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The exact target of tilt ``lam``: (weights [8], means [8, 2], per-axis std)."""
    mu, c = means(), torch.tensor(CENTER, dtype=torch.float64)
    if lam == 0:
        return torch.full((MODES,), 1 / MODES, dtype=torch.float64), mu, STD
    prec = 1 / STD**2 + lam / RHO2
    m = (mu / STD**2 + lam * c / RHO2) / prec
    logw = -((mu - c) ** 2).sum(1) / (2 * (STD**2 + RHO2 / lam))
    return torch.softmax(logw, 0), m, 1 / math.sqrt(prec)


def sample_target(lam: float, n: int, g: torch.Generator) -> torch.Tensor:
    w, m, sd = tilted(lam)
    k = torch.multinomial(w, n, replacement=True, generator=g)
    return (m[k] + sd * torch.randn(n, 2, generator=g, dtype=torch.float64)).float()


class MixtureReward(torch.nn.Module):
    """r(x) = -|x - c|^2 / (2 rho^2), range (-inf, 0]; differentiable. Prompts are ignored (one task)."""

    range = (float("-inf"), 0.0)

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.forward_tokens = 0

    def reward(self, prompts: Sequence[str], samples: torch.Tensor) -> torch.Tensor:
        c = torch.tensor(CENTER, dtype=samples.dtype, device=samples.device)
        return -((samples.reshape(len(samples), 2) - c) ** 2).sum(1) / (2 * RHO2)

    def score(self, prompts: Sequence[str], samples: torch.Tensor) -> list[float]:
        self.calls += 1
        with torch.no_grad():
            return self.reward(prompts, torch.as_tensor(samples)).tolist()


def _kernel(a: torch.Tensor, b: torch.Tensor, bandwidths: Sequence[float]) -> torch.Tensor:
    d2 = torch.cdist(a, b) ** 2
    return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)


def _within(x: torch.Tensor, bandwidths: Sequence[float]) -> float:
    """The mean kernel between distinct points of ``x`` (one of MMD's three terms)."""
    k = _kernel(x, x, bandwidths)
    return float((k.sum() - k.diagonal().sum()) / (len(x) * (len(x) - 1)))


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = BANDWIDTHS, yy: float | None = None) -> float:
    """Unbiased MMD^2 between samples ``x`` and ``y`` with a sum of RBF kernels exp(-|a-b|^2 / (2 h^2)).

    ``yy`` is the within-``y`` term when it is already known (a fixed target sample).
    """
    x, y = x.double().reshape(len(x), -1), y.double().reshape(len(y), -1)
    yy = _within(y, bandwidths) if yy is None else yy
    return _within(x, bandwidths) + yy - 2 * float(_kernel(x, y, bandwidths).mean())


@functools.cache
def _target(lam: float, n: int, seed: int) -> tuple[torch.Tensor, float]:
    y = sample_target(lam, n, torch.Generator().manual_seed(seed)).double()
    return y, _within(y, BANDWIDTHS)


def mode_tv(x: torch.Tensor, lam: float) -> float:
    """Total variation between the nearest-mode histogram of ``x`` and the target's mode weights."""
    w, m, _ = tilted(lam)
    k = torch.cdist(x.double().reshape(len(x), 2), m).argmin(1)
    hist = torch.bincount(k, minlength=MODES).double() / len(x)
    return float(0.5 * (hist - w).abs().sum())


def distance(samples: torch.Tensor, lam: float, n_target: int = 4000, seed: int = 0) -> dict:
    """``{"mmd2", "mode_tv"}`` of ``samples`` to the exact tilted target (a fixed, seeded target sample)."""
    target, yy = _target(float(lam), n_target, seed)
    return {"mmd2": round(mmd2(samples, target, yy=yy), 5), "mode_tv": round(mode_tv(samples, lam), 4)}
