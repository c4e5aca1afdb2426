"""SMC resampling, shared by every particle method (particle filtering over LM steps, FK steering over denoising).

Each scheme draws ``n`` ancestor indices from normalised ``weights`` with an
explicit ``torch.Generator``; particle i is expected to be copied n w_i times
by all three (Douc, Cappé and Moulines, "Comparison of Resampling Schemes for
Particle Filtering", 2005):

- multinomial: n independent draws from the weights (the highest variance);
- stratified: one uniform draw in each stratum [k/n, (k+1)/n);
- systematic: one uniform offset u, pointers (u + k)/n (the lowest variance in
  practice; particle i is copied floor(n w_i) or ceil(n w_i) times).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

Scheme = Literal["multinomial", "systematic", "stratified"]


def multinomial_resample(weights: torch.Tensor, n: int, g: torch.Generator) -> list[int]:
    return torch.multinomial(weights, n, replacement=True, generator=g).tolist()


def _invert_cdf(weights: torch.Tensor, u: torch.Tensor) -> list[int]:
    cdf = torch.cumsum(weights.double(), 0)
    cdf[-1] = 1.0  # weights that sum to 1 - 1e-16 must not leave the last pointer past the end
    return torch.searchsorted(cdf, u).clamp(max=len(weights) - 1).tolist()


def systematic_resample(weights: torch.Tensor, n: int, g: torch.Generator) -> list[int]:
    """One uniform offset, n evenly spaced pointers into the CDF."""
    u = (torch.rand(1, generator=g).item() + torch.arange(n, dtype=torch.float64)) / n
    return _invert_cdf(weights, u)


def stratified_resample(weights: torch.Tensor, n: int, g: torch.Generator) -> list[int]:
    """One uniform pointer in each of n equal strata of the CDF."""
    u = (torch.rand(n, generator=g, dtype=torch.float64) + torch.arange(n, dtype=torch.float64)) / n
    return _invert_cdf(weights, u)


RESAMPLERS: dict[str, Callable[[torch.Tensor, int, torch.Generator], list[int]]] = {
    "multinomial": multinomial_resample,
    "systematic": systematic_resample,
    "stratified": stratified_resample,
}


def resample(scheme: Scheme, weights: torch.Tensor, n: int, g: torch.Generator) -> list[int]:
    """``n`` ancestor indices drawn from ``weights`` (non-negative, summing to 1) by ``scheme``."""
    return RESAMPLERS[scheme](weights, n, g)


def normalise(log_weights: torch.Tensor) -> torch.Tensor:
    """softmax: weights summing to 1 from unnormalised log-weights (in float64)."""
    return torch.softmax(log_weights.double(), 0)


def ess(weights: torch.Tensor) -> float:
    """Effective sample size 1 / sum w_i^2 of normalised weights: n for uniform weights, 1 when one holds all."""
    return float(1.0 / (weights.double() ** 2).sum())
