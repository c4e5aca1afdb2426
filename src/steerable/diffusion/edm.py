"""EDM's stochastic sampler as a step-wise process: a step is one Heun step of Karras et al.'s Algorithm 2.

Karras, Aittala, Aila and Laine, "Elucidating the Design Space of
Diffusion-Based Generative Models" (NeurIPS 2022). The schedule and the
preconditioning come from diffusers' ``EDMEulerScheduler`` (Karras sigmas,
sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, then 0;
D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)); the step is the paper's:
churn x up to s_hat = sigma_i (1 + gamma_i) with fresh noise, an Euler step to
sigma_{i+1}, and Heun's correction unless sigma_{i+1} = 0, so a run of n steps
costs 2n - 1 denoiser evaluations per row. The scheduler's own ``step`` is
Euler only and draws its churn noise from a torch generator, so the step is
written here.

As in :class:`~steerable.diffusion.process.DiffusionProcess`, every row draws
its noise from its own counter-based stream (:func:`steerable.streams.gaussian`:
x_T at step -1, the churn of step i at step i), so a row's sample never
depends on its batch-mates, and ``select`` forks rows (the first copy keeps its
stream, later copies branch off it). ``guidance`` (a function of the rows'
x and the step index) may move x before each step, as policy-guided diffusion
moves a trajectory's actions. ``usage.nfe`` counts denoiser evaluations per row.

The denoiser is any diffusers model called as ``denoiser(c_in x, time_scale *
c_noise).sample`` (c_noise = log(sigma) / 4); ``time_scale`` 1000 spreads
c_noise over the range a sinusoidal time embedding made for DDPM's timesteps
expects. The process is unconditional: its condition is kept for scorers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from steerable.errors import ConfigError, InputError
from steerable.streams import forks, gaussian, stream
from steerable.usage import Usage


def edm_scheduler(sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float = 1.0, rho: float = 7.0):
    """diffusers' EDM scheduler with these settings (Karras sigmas, EDM's preconditioning of an F-prediction)."""
    from diffusers import EDMEulerScheduler

    return EDMEulerScheduler(sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=sigma_data, rho=rho)


def edm_denoise(scheduler, model: torch.nn.Module, x: torch.Tensor, sigma, time_scale: float = 1000.0):
    """D(x; sigma) = c_skip x + c_out F(c_in x, time_scale * c_noise) with the scheduler's preconditioning;
    ``sigma`` is [rows] or a scalar."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype).expand(x.shape[0])
    s = sigma.view(-1, *([1] * (x.ndim - 1)))
    out = model(scheduler.precondition_inputs(x, s), time_scale * scheduler.precondition_noise(sigma)).sample
    return scheduler.precondition_outputs(x, out, s)


@dataclass
class EDMState:
    x: torch.Tensor  # [rows, *shape] each row's x at its step's sigma
    index: torch.Tensor  # [rows] long: steps taken; a row is done at num_steps
    streams: torch.Tensor  # [rows] long: each row's noise stream
    cond: Any = None  # the run's condition, for scorers (the process is unconditional)


@dataclass
class EDMProcess:
    """EDM's stochastic Heun sampler over ``denoiser`` (see the module docstring); the defaults are the paper's and
    the policy-guided diffusion authors' (S_churn 80, S_tmin 0.05, S_tmax 50, S_noise 1.003)."""

    denoiser: torch.nn.Module
    num_steps: int = 64
    sample_shape: tuple[int, ...] | None = None  # default: the denoiser config's sample_shape
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 1.0
    rho: float = 7.0
    s_churn: float = 80.0
    s_tmin: float = 0.05
    s_tmax: float = 50.0
    s_noise: float = 1.003
    time_scale: float = 1000.0
    guidance: Callable[[torch.Tensor, int], torch.Tensor] | None = None  # (x of the rows at step i, i) -> moved x
    _usage: Usage = field(default_factory=Usage, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 2 <= self.num_steps <= 10_000:
            raise ConfigError(f"EDM sampling needs 2 to 10000 steps (got {self.num_steps})")
        if self.sample_shape is None:
            shape = getattr(getattr(self.denoiser, "config", None), "sample_shape", None)
            if shape is None:
                raise ConfigError("EDMProcess needs sample_shape for a denoiser whose config has none")
            self.sample_shape = tuple(shape)
        self.sample_shape = tuple(self.sample_shape)
        self.scheduler = edm_scheduler(self.sigma_min, self.sigma_max, self.sigma_data, self.rho)
        self.scheduler.set_timesteps(self.num_steps)
        self.sigmas = [float(s) for s in self.scheduler.sigmas]  # num_steps + 1, the last 0
        churn = min(self.s_churn / self.num_steps, math.sqrt(2) - 1)
        self.gammas = [churn if self.s_tmin <= s <= self.s_tmax else 0.0 for s in self.sigmas[:-1]]

    # -- the Process interface -------------------------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        return self._usage

    def start_run(self) -> None:
        """Nothing to reset: a run's length is fixed by ``num_steps``."""

    def init(self, cond: Any, n: int, seed: int | None = None) -> EDMState:
        if n < 1:
            raise InputError(f"an EDM state needs at least one row (got {n})")
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        streams = torch.tensor([stream(seed, r) for r in range(n)], dtype=torch.long)
        x = gaussian(streams, -1, self._dims).float().reshape(n, *self.sample_shape) * self.sigmas[0]
        return EDMState(x, torch.zeros(n, dtype=torch.long), streams, cond)

    def size(self, state: EDMState) -> int:
        return len(state.x)

    def is_terminal(self, state: EDMState) -> list[bool]:
        return (state.index >= self.num_steps).tolist()

    def propose(self, state: EDMState) -> None:
        """One step for every live row (rows at different steps step in groups)."""
        live = torch.nonzero(state.index < self.num_steps).flatten()
        for i in state.index[live].unique().tolist():
            rows = live[state.index[live] == i]
            state.x[rows] = self._heun(state.x[rows], state.streams[rows], i)
            state.index[rows] += 1

    def select(self, state: EDMState, rows: Sequence[int]) -> EDMState:
        """A new state of ``rows``; a repeated row's first copy keeps its stream, later copies branch off it."""
        rows = list(rows)
        if not rows or min(rows) < 0 or max(rows) >= len(state.x):
            raise InputError(f"row index out of range for a state of {len(state.x)} rows: {rows}")
        streams = forks(state.streams.tolist(), rows, state.index.tolist())
        idx = torch.tensor(rows, dtype=torch.long)
        return EDMState(state.x[idx].clone(), state.index[idx].clone(), torch.tensor(streams), state.cond)

    def concat(self, states: Sequence[EDMState]) -> EDMState:
        if not states:
            raise InputError("concat needs at least one state")
        cat = torch.cat
        return EDMState(cat([s.x for s in states]), cat([s.index for s in states]),
                        cat([s.streams for s in states]), states[0].cond)  # fmt: skip

    def preview(self, state: EDMState) -> torch.Tensor:
        """``[rows, *shape]`` each row's x0-prediction D(x; sigma) (a denoiser call per live row); done rows: x."""
        out = state.x.clone()
        live = torch.nonzero(state.index < self.num_steps).flatten()
        for i in state.index[live].unique().tolist():
            rows = live[state.index[live] == i]
            with torch.no_grad():
                out[rows] = self.denoise(state.x[rows], self.sigmas[i])
        return out

    # -- EDM ------------------------------------------------------------------------------------------------

    @property
    def _dims(self) -> int:
        return math.prod(self.sample_shape)

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """D(x; sigma) for rows ``x``, counted in ``usage.nfe``."""
        self._usage = self._usage + Usage(nfe=len(x))
        return edm_denoise(self.scheduler, self.denoiser, x, sigma, self.time_scale)

    def _heun(self, x: torch.Tensor, streams: torch.Tensor, i: int) -> torch.Tensor:
        if self.guidance is not None:
            x = self.guidance(x, i)
        s, s_next, g = self.sigmas[i], self.sigmas[i + 1], self.gammas[i]
        with torch.no_grad():
            s_hat = s * (1 + g)
            if g:
                z = gaussian(streams, i, self._dims).to(x.dtype).reshape(x.shape)
                x = x + math.sqrt(s_hat**2 - s**2) * self.s_noise * z
            d = (x - self.denoise(x, s_hat)) / s_hat
            x_next = x + (s_next - s_hat) * d
            if s_next > 0:  # Heun's correction
                d2 = (x_next - self.denoise(x_next, s_next)) / s_next
                x_next = x + 0.5 * (s_next - s_hat) * (d + d2)
        return x_next
