"""A diffusion sampler as a step-wise process: a step is one scheduler step (or a segment of k) on the live rows.

Rows are particles. ``init`` draws x_T for n rows; ``propose`` runs ``segment``
DDIM steps on every live row in one batched denoiser call per step (rows may
sit at different steps, as tree search's leaves do: the timestep is per row);
``select`` and ``concat`` index tensors; ``preview`` is the x0-prediction of
each row's current state (``pred_original_sample``; the sample itself once a
row is done). The noise a preview computes is kept and reused by the row's
next step, so previewing costs no extra denoiser evaluation over a plain run.

Sampling is DDIM (Song et al., "Denoising Diffusion Implicit Models") with
``eta``: 1 is the ancestral (DDPM-like) sampler SMC and tree search need, 0 a
deterministic map from x_T to x0. Any scheduler's config converts (the
training ``DDPMScheduler``, a pipeline's PNDM): multistep schedulers keep
history inside the scheduler object, so their steps cannot fork with a row.

Every row draws its noise from its own counter-based stream
(:mod:`steerable.diffusion.noise`), so a row's sample does not depend on its
batch-mates; a fork continues the first copy's stream and branches the others.

Cost, in ``usage``: ``nfe`` counts denoiser evaluations per row (a guided
step's forward pass included; its backward pass is counted apart in
``backward_passes``); ``decoder_calls`` counts VAE decodes (latent models).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from steerable.errors import ConfigError, InputError
from steerable.streams import forks, gaussian, stream
from steerable.usage import Usage


@dataclass
class DiffusionState:
    x: torch.Tensor  # [rows, *shape] each row's x_t
    index: torch.Tensor  # [rows] long: steps taken; a row is done at num_steps
    streams: torch.Tensor  # [rows] long: each row's noise stream
    cond: Any  # the run's condition (a prompt, a target, ...), what scorers are told
    condition: Any = None  # the denoiser's encoding of ``cond``, shared by every row (None: unconditional)
    eps: torch.Tensor | None = None  # [rows, *shape] model output at x where `fresh`
    x0: torch.Tensor | None = None  # [rows, *shape] x0-prediction at x where `fresh`; elsewhere the last step's
    fresh: torch.Tensor | None = None  # [rows] bool: eps/x0 belong to the current x
    log_ratio: torch.Tensor | None = None  # [rows] float64: sum of log p(step)/q(step) of guided steps
    shown: torch.Tensor | None = None  # the last preview while no row has stepped since (decoded: decoder calls)
    grad: torch.Tensor | None = None  # [rows, *shape] a guided process's reward gradient at x where `graded`
    graded: torch.Tensor | None = None  # [rows] bool: eps, x0 and grad came from one guided pass at the current x

    def __post_init__(self) -> None:
        n = len(self.x)
        if self.graded is None:
            self.graded = torch.zeros(n, dtype=torch.bool)
            self.grad = torch.zeros_like(self.x)
        if self.fresh is None:
            self.fresh = torch.zeros(n, dtype=torch.bool)
        if self.eps is None:
            self.eps = torch.zeros_like(self.x)
            self.x0 = torch.zeros_like(self.x)
        if self.log_ratio is None:
            self.log_ratio = torch.zeros(n, dtype=torch.float64)


def ddim(scheduler) -> Any:
    """A DDIM scheduler with ``scheduler``'s noise schedule (a DDIM one is copied, never shared)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(scheduler.config)


@dataclass
class DiffusionProcess:
    """Any diffusers denoiser (``denoiser(x, t, **{condition_arg: c}).sample`` is the noise) and its scheduler.

    The process's condition ``C`` is whatever ``encode`` takes: ``encode``
    maps it to the denoiser's condition (None: unconditional, the condition
    then only tells the scorer what is wanted: the digits world's target). ``guidance``
    (:class:`~steerable.diffusion.guidance.RewardGuidance`) shifts every step
    by a reward's gradient.
    """

    denoiser: torch.nn.Module
    scheduler: Any
    num_steps: int = 50
    eta: float = 1.0
    segment: int = 1
    sample_shape: tuple[int, ...] | None = None  # default: the denoiser config's sample_shape
    encode: Callable[[Any], Any] | None = None
    condition_arg: str = "condition"
    guidance: Any = None
    device: str = "cpu"
    _usage: Usage = field(default_factory=Usage, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.num_steps <= 10_000:
            raise ConfigError(f"num_steps must be in [1, 10000] (got {self.num_steps})")
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"eta must be in [0, 1] (got {self.eta})")
        if self.segment < 1:
            raise ConfigError(f"segment must be >= 1 (got {self.segment})")
        self.scheduler = ddim(self.scheduler)
        self.scheduler.set_timesteps(self.num_steps)
        self.timesteps = self.scheduler.timesteps.clone()
        if self.sample_shape is None:
            shape = getattr(getattr(self.denoiser, "config", None), "sample_shape", None)
            if shape is None:
                raise ConfigError("DiffusionProcess needs sample_shape for a denoiser whose config has none")
            self.sample_shape = tuple(shape)
        self.sample_shape = tuple(self.sample_shape)
        self.backward_passes = 0
        self.denoiser.eval()
        if self.guidance is not None:
            self.guidance.check(self)

    # -- the Process interface -------------------------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        return self._usage

    def start_run(self) -> None:
        """Nothing to reset: a diffusion run's length is fixed by ``num_steps``."""

    def init(self, cond: Any, n: int, seed: int | None = None) -> DiffusionState:
        if n < 1:
            raise InputError(f"a diffusion state needs at least one row (got {n})")
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        streams = torch.tensor([stream(seed, r) for r in range(n)], dtype=torch.long)
        dims = int(torch.tensor(self.sample_shape).prod())
        x = gaussian(streams, -1, dims).float().reshape(n, *self.sample_shape) * self.scheduler.init_noise_sigma
        encoded = self.encode(cond) if self.encode is not None else None
        return DiffusionState(x.to(self.device), torch.zeros(n, dtype=torch.long), streams, cond, encoded)

    def size(self, state: DiffusionState) -> int:
        return len(state.x)

    def is_terminal(self, state: DiffusionState) -> list[bool]:
        return (state.index >= self.num_steps).tolist()

    def steps_left(self, state: DiffusionState) -> list[int]:
        return (self.num_steps - state.index).clamp(min=0).tolist()

    def propose(self, state: DiffusionState, steps: int | None = None) -> None:
        """``steps`` (default ``segment``) denoising steps on every live row (fewer where a row finishes)."""
        for _ in range(self.segment if steps is None else steps):
            live = torch.nonzero(state.index < self.num_steps).flatten()
            if len(live) == 0:
                return
            self._step(state, live)

    def select(self, state: DiffusionState, rows: Sequence[int]) -> DiffusionState:
        """A new state of ``rows``; a repeated row's first copy keeps its stream, later copies branch off it."""
        rows = list(rows)
        if not rows:
            raise InputError("select needs at least one row")
        if min(rows) < 0 or max(rows) >= len(state.x):
            raise InputError(f"row index out of range for a state of {len(state.x)} rows: {rows}")
        idx = torch.tensor(rows, dtype=torch.long)
        streams = forks(state.streams.tolist(), rows, state.index.tolist())
        return DiffusionState(
            state.x[idx.to(state.x.device)].clone(),
            state.index[idx].clone(),
            torch.tensor(streams, dtype=torch.long),
            state.cond,
            state.condition,
            state.eps[idx.to(state.x.device)].clone(),
            state.x0[idx.to(state.x.device)].clone(),
            state.fresh[idx].clone(),
            state.log_ratio[idx].clone(),
            None if state.shown is None else state.shown[idx.to(state.shown.device)],
            state.grad[idx.to(state.x.device)].clone(),
            state.graded[idx].clone(),
        )

    def concat(self, states: Sequence[DiffusionState]) -> DiffusionState:
        if not states:
            raise InputError("concat needs at least one state")
        c = states[0].cond
        if any(s.cond is not c and s.cond != c for s in states):
            raise InputError("concat joins states of one condition; these were started from different ones")
        cat = torch.cat
        return DiffusionState(
            cat([s.x for s in states]),
            cat([s.index for s in states]),
            cat([s.streams for s in states]),
            states[0].cond,
            states[0].condition,
            cat([s.eps for s in states]),
            cat([s.x0 for s in states]),
            cat([s.fresh for s in states]),
            cat([s.log_ratio for s in states]),
            None if any(s.shown is None for s in states) else cat([s.shown for s in states]),
            cat([s.grad for s in states]),
            cat([s.graded for s in states]),
        )

    def preview(self, state: DiffusionState) -> torch.Tensor:
        """``[rows, *shape]`` the x0-prediction of each row (decoded for latent models); done rows: the sample."""
        if state.shown is None:
            with torch.no_grad():
                state.shown = self.decode(self.x0_prediction(state))
        return state.shown

    # -- diffusion specifics ----------------------------------------------------------------------------------

    def x0_prediction(self, state: DiffusionState) -> torch.Tensor:
        """``[rows, *shape]`` x0-predictions in the denoiser's space (latents for latent models)."""
        stale = torch.nonzero((~state.fresh) & (state.index < self.num_steps)).flatten()
        if len(stale) and self.guidance is not None:  # the guided step needs this pass's gradient: take it now, once
            self.guidance.prepare(self, state, stale)
        elif len(stale):
            eps = self.model_output(state, stale)
            self._remember(state, stale, eps)
        done = state.index >= self.num_steps
        return torch.where(done.reshape(-1, *[1] * (state.x.ndim - 1)).to(state.x.device), state.x, state.x0)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Latent to sample space (identity for a pixel- or state-space model)."""
        return x0

    def timestep(self, index: torch.Tensor) -> torch.Tensor:
        return self.timesteps[index.clamp(max=self.num_steps - 1)]

    def model_output(self, state: DiffusionState, rows: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The denoiser's output at ``rows`` (``x`` overrides their x_t, e.g. one that needs a gradient)."""
        x = state.x[rows.to(state.x.device)] if x is None else x
        t = self.timestep(state.index[rows]).to(x.device)
        kwargs = {} if state.condition is None else {self.condition_arg: self._expand(state.condition, len(x))}
        self._usage = self._usage + Usage(nfe=len(x))
        return self.denoiser(x, t, **kwargs).sample

    def _expand(self, cond: torch.Tensor, n: int) -> torch.Tensor:
        return cond.unsqueeze(0).expand(n, *cond.shape)

    def sigma(self, index: torch.Tensor) -> torch.Tensor:
        """``[rows]`` the DDIM step's noise scale eta * sigma_t at step ``index`` (0 where the step is deterministic).

        sigma_t^2 = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev) (DDIM eq. 16).
        """
        abar, abar_prev = self.abar_pair(index)
        return self.eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).clamp(min=0).sqrt()

    def abar(self, index: torch.Tensor) -> torch.Tensor:
        return self.scheduler.alphas_cumprod[self.timestep(index)]

    def abar_pair(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[rows]`` abar at each row's timestep and at the one its DDIM step goes to (the final abar past 0)."""
        s = self.scheduler
        t = self.timestep(index)
        prev = t - s.config.num_train_timesteps // self.num_steps
        return s.alphas_cumprod[t], torch.where(prev >= 0, s.alphas_cumprod[prev.clamp(min=0)], s.final_alpha_cumprod)

    def noise(self, state: DiffusionState, rows: torch.Tensor) -> torch.Tensor:
        """The standard normals ``rows`` draw at their current step, ``[len(rows), *shape]``."""
        dims = int(torch.tensor(self.sample_shape).prod())
        out = gaussian(state.streams[rows], state.index[rows], dims)  # each row at its own step, one call
        return out.to(state.x).reshape(len(rows), *self.sample_shape)

    def ddim_step(
        self, eps: torch.Tensor, index: torch.Tensor, x: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_prev, x0_hat)`` of one scheduler step per row (differentiable).

        Rows at different steps take one tensor pass with per-row coefficients, the same float operations
        in the same order as ``DDIMScheduler.step`` (so the same bits); a config that pass does not cover
        (thresholding, a prediction type other than epsilon) goes through ``step`` once per distinct step.
        """
        s = self.scheduler
        if s.config.thresholding or s.config.prediction_type != "epsilon":
            return self._ddim_step_grouped(eps, index, x, noise)
        col = (-1, *[1] * (x.ndim - 1))
        a, a_prev = (v.reshape(col).to(x.device) for v in self.abar_pair(index))  # [rows, 1, ...]
        b, b_prev = 1 - a, 1 - a_prev
        x0 = (x - b ** (0.5) * eps) / a ** (0.5)
        if s.config.clip_sample:
            x0 = x0.clamp(-s.config.clip_sample_range, s.config.clip_sample_range)
        std = self.eta * ((b_prev / b) * (1 - a / a_prev)) ** (0.5)
        prev = a_prev ** (0.5) * x0 + (1 - a_prev - std**2) ** (0.5) * eps
        if self.eta > 0 and noise is not None:
            prev = prev + std * noise
        return prev, x0

    def _ddim_step_grouped(self, eps, index, x, noise=None):
        prev, x0 = torch.empty_like(x), torch.empty_like(x)
        for i in index.unique().tolist():
            sub = (index == i).to(x.device)
            z = torch.zeros_like(x[sub]) if noise is None or self.eta == 0 else noise[sub]
            out = self.scheduler.step(eps[sub], self.timesteps[i], x[sub], eta=self.eta, variance_noise=z)
            prev[sub], x0[sub] = out.prev_sample, out.pred_original_sample
        return prev, x0

    def _remember(self, state: DiffusionState, rows: torch.Tensor, eps: torch.Tensor) -> None:
        """Keep ``eps`` and its x0-prediction for ``rows`` until they step."""
        rd = rows.to(state.x.device)
        _, x0 = self.ddim_step(eps, state.index[rows], state.x[rd])
        state.eps[rd] = eps.detach()
        state.x0[rd] = x0.detach()
        state.fresh[rows] = True

    def _step(self, state: DiffusionState, live: torch.Tensor) -> None:
        if self.guidance is not None:
            self.guidance.step(self, state, live)  # eps with the reward's gradient for every live row
        else:
            need = live[~state.fresh[live]]
            if len(need):  # the x0-prediction is not needed here: the step's own scheduler call gives it
                with torch.no_grad():
                    state.eps[need.to(state.x.device)] = self.model_output(state, need)
        ld = live.to(state.x.device)
        prev, x0 = self.ddim_step(state.eps[ld], state.index[live], state.x[ld], self.noise(state, live))
        state.x[ld] = prev.detach()
        state.x0[ld] = x0.detach()  # not fresh: what a watcher shows of this step without a model call
        state.index[live] += 1
        state.fresh[live] = False
        state.graded[live] = False
        state.shown = None

    def with_options(self, **changes) -> DiffusionProcess:
        """A copy with other settings (``eta``, ``segment``, ``guidance``) sharing the denoiser."""
        return replace(self, **changes)
