"""Reward-gradient guidance (DPS-style): the gradient of a differentiable reward at the x0-prediction steers each step.

Diffusion Posterior Sampling (Chung et al., "Diffusion Posterior Sampling for
General Noisy Inverse Problems") approximates the intractable grad log p(y | x_t)
by the gradient through the x0-prediction, grad_{x_t} log p(y | x0_hat(x_t)).
Here the "measurement" is a reward: with the tilted target p(x) exp(lambda r(x)),
the score gains lambda grad_{x_t} r(x0_hat(x_t)), and in noise-prediction form
(Dhariwal & Nichol's classifier guidance for DDIM, their Algorithm 2)

    eps_guided = eps - scale * sqrt(1 - abar_t) * grad_{x_t} r(x0_hat(x_t))

with ``scale`` = lambda for the tilt's own score. The gradient runs through
the denoiser (as in DPS), so a guided step costs one forward (1 NFE) and one
backward pass (``process.backward_passes``). The x0-prediction a strategy previews
before a guided step (FK's weighing) comes from that same pass (:meth:`prepare`),
so previewing costs no extra evaluation here either.

Where we differ from DPS's code (``PosteriorSampling.conditioning`` in
DPS2022/diffusion-posterior-sampling): it takes the unguided DDPM step and
then subtracts ``scale * grad_{x_t} ||y - A(x0_hat(x_t))||``, the gradient of
the *unsquared* residual norm, which is the paper's normalised step
zeta / ||y - A(x0_hat)|| on the squared norm (up to a factor 2), with no
sqrt(1 - abar_t) factor. A reward has no residual to normalise by, so here
the raw gradient of r enters the score as the tilt's own score does (above):
the step size grows with |grad r| instead of being normalised, and ``scale``
is lambda, not DPS's zeta (their 0.3-1.0 for images do not transfer). The
score form works with any eta and gives the step's proposal mean, which FK
steering needs to correct for the guidance (below).

As FK's proposal q: each guided step's log p(x_{t-1} | x_t) - log q(x_{t-1} | x_t)
(two Gaussians with the same variance sigma_t^2) is added to the row's
``log_ratio``, which FK folds into its weights, so FK still targets
p(x) exp(lambda r(x)). With eta > 0, steps whose sigma_t is 0 (DDIM's last)
run unguided, since no density ratio exists there; with eta = 0 every step is
guided and no ratio is kept (a deterministic guided map: usable alone, not as
an SMC proposal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from steerable.errors import ConfigError


@dataclass
class RewardGuidance:
    scorer: Any  # has reward(conds, samples) -> differentiable [rows] tensor
    scale: float = 1.0  # lambda in the tilted score; 0 turns guidance off
    calls: int = 0  # reward gradients taken (one per guided batch)

    def check(self, process) -> None:
        if not callable(getattr(self.scorer, "reward", None)):
            raise ConfigError(
                f"reward guidance needs a differentiable scorer (with reward()); {type(self.scorer).__name__} has none"
            )
        if self.scale < 0 or self.scale != self.scale:
            raise ConfigError(f"guidance scale must be >= 0 (got {self.scale})")
        if process.scheduler.config.prediction_type != "epsilon":
            raise ConfigError(
                f"reward guidance needs an epsilon-prediction model (got {process.scheduler.config.prediction_type!r})"
            )

    def prepare(self, process, state, rows: torch.Tensor) -> None:
        """One forward and backward pass at ``rows``' current x: the model output, the x0-prediction and the
        reward's gradient, kept in ``state`` until the rows step. A preview taken before a guided step (FK's
        weighing) is this pass, so the step reuses it instead of running the denoiser again."""
        rd = rows.to(state.x.device)
        x = state.x[rd].detach().requires_grad_(True)
        with torch.enable_grad():
            eps = process.model_output(state, rows, x=x)
            _, x0 = process.ddim_step(eps, state.index[rows], x)
            r = self.scorer.reward([state.cond] * len(x), process.decode(x0))
            (grad,) = torch.autograd.grad(r.sum(), x)
        self.calls += 1
        process.backward_passes += 1
        state.eps[rd], state.x0[rd], state.grad[rd] = eps.detach(), x0.detach(), grad
        state.fresh[rows] = True
        state.graded[rows] = True

    def step(self, process, state, live: torch.Tensor) -> None:
        """Guided model outputs for ``live`` rows, kept in ``state``; the step's log p/q added to ``log_ratio``."""
        need = live[~(state.fresh[live] & state.graded[live])]
        if len(need):
            self.prepare(process, state, need)
        ld = live.to(state.x.device)
        index = state.index[live]
        x, eps, grad = state.x[ld], state.eps[ld], state.grad[ld]
        view = (-1, *[1] * (x.ndim - 1))
        abar = process.abar(index).to(x)
        guided = eps - self.scale * (1 - abar).sqrt().reshape(view) * grad
        if process.eta > 0:
            sigma = process.sigma(index).to(x)
            still = sigma <= 0  # a deterministic step has no density ratio: it runs unguided
            guided = torch.where(still.reshape(view), eps, guided)
            d = process.ddim_step(guided, index, x)[0] - process.ddim_step(eps, index, x)[0]  # mu_q - mu_p
            z = process.noise(state, live)
            s = sigma.clamp(min=1e-12).reshape(view)
            # log N(x'; mu_p, s^2) - log N(x'; mu_q, s^2) at x' = mu_q + s z
            log_ratio = -((2 * s * z * d + d * d) / (2 * s * s)).reshape(len(x), -1).sum(1)
            state.log_ratio[live] += torch.where(still, 0.0, log_ratio).double().cpu()
        state.eps[ld] = guided
