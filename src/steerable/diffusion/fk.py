"""Feynman-Kac steering of a diffusion sampler (Singhal, Horvitz, Teehan et al., "A General Framework for
Inference-time Scaling and Steering of Diffusion Models", ICML 2025).

Target p(x0) exp(lambda r(x0)) / Z. ``budget`` = k particles run the base
sampler (or a guided proposal); at the resampling steps each particle's
intermediate reward r_t = r(x0_hat(x_t)) gives a potential G_t:

    diff: G_t = exp(lambda (r_t - r_prev))      (r_prev: the particle's reward at the last resampling step)
    max:  G_t = exp(lambda max_{s >= t} r_s)    (the running max of the lineage)
    sum:  G_t = exp(lambda sum_{s >= t} r_s)    (the running sum of the lineage)

and at the last step, for max and sum, G_0 = exp(lambda r(x0)) / prod of the
lineage's earlier G, so the potentials of every lineage telescope to
exp(lambda r(x0)) (diff telescopes by itself). Particles are resampled in
proportion to their weights (the shared :mod:`steerable.search.resampling`).

Resampling steps (in steps taken): ``t_start``, ``t_start + resample_every``,
... up to ``t_end``, plus always the last step, as the authors' code
(``fkd_class.py``: ``arange(t_start, t_end + 1, freq)`` plus the last step).
Our defaults for 50 DDIM steps, every 10 from 10 to 40, scale their SDXL
launch settings (every 20 from 20 to 80 of 100 steps). ``adaptive`` resamples
only when the ESS falls below ``ess_threshold`` * k.

Where we differ from the authors' code, and why:
- Weights live in log space and are carried between resampling steps
  (log w += log G_t); the code computes exp(lambda r) in float32 (overflow to inf,
  then NaN set to 0) and, when an adaptive step skips resampling, throws the
  step's weights away, so diff no longer telescopes.
- The final correction: for ``max`` and ``sum`` the last step's potential divides out the lineage's earlier
  ones, so every lineage's product of potentials is exp(lambda r(x0)), the paper's target; the code applies no
  such correction, so its product is exp(lambda max_s r_s) for ``max`` and exp(lambda sum_s r_s) for ``sum``
  (a lineage is weighted by its best or its summed intermediate rewards, not by its final one). ``diff``
  telescopes to exp(lambda r(x0)) in both (the running reward starts at 0).
- No reward floor: the code starts the running rewards at ``reward_min_value=0``,
  which turns ``max`` off for negative rewards such as log-probabilities.
- The intermediate reward is r(x0_hat(x_t)) of the state being resampled; the
  code scores the x0-prediction of the step before (it reads
  ``pred_original_sample`` of the step that produced x_t). The x0-prediction
  here is the model output the next step uses anyway, so it costs no NFE.
- With a guided proposal q (``process.guidance``), each step's
  log p(x_t | x_t+1) - log q(x_t | x_t+1) joins the weights (the paper's
  importance weight for a proposal other than the model).

The answer: ``final="argmax"`` takes the particle with the highest reward
after the last resampling (the authors' ``best_of_n_samples``);
``final="sample"`` draws one particle, a sample of the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from steerable.config import check, opt
from steerable.errors import ConfigError
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, no_answer, require
from steerable.search.process import C
from steerable.search.resampling import Scheme, ess, normalise, resample
from steerable.search.result import Candidate, Result


@dataclass(frozen=True)
class FKSteering:
    lam: float = opt(10.0, "lambda: the tilt of the target p(x) exp(lambda r(x)).", ge=0.0, le=1e6)
    potential: Literal["diff", "max", "sum"] = opt("diff", "The potential G_t: diff, max or sum of lambda r_t.")
    resample_every: int = opt(10, "Steps between resampling steps.", ge=1, le=10_000)
    t_start: int = opt(10, "First resampling step (steps taken).", ge=1, le=10_000)
    t_end: int = opt(40, "Last scheduled resampling step before the final one (steps taken).", ge=1, le=10_000)
    adaptive: bool = opt(False, "Resample only when ESS < ess_threshold * particles (weights carried otherwise).")
    ess_threshold: float = opt(0.5, "Adaptive resampling's ESS fraction.", gt=0.0, le=1.0)
    resampling: Scheme = opt("multinomial", "The authors' multinomial, or systematic / stratified.")
    final: Literal["argmax", "sample"] = opt("argmax", "The answer: the best particle, or one drawn (a sample).")
    extract: Extract = no_answer
    name = "fk"

    def __post_init__(self) -> None:
        check(self, f"{self.name}: ")

    def schedule(self, num_steps: int) -> list[int]:
        """The steps (counted in steps taken, 1..num_steps) after which particles are weighed."""
        return sorted(
            {s for s in range(self.t_start, self.t_end + 1, self.resample_every) if s < num_steps} | {num_steps}
        )

    def run(self, process, scorer: Scorer, budget: int, cond: C, seed: int | None = None) -> Result:
        require(budget, scorer, self.name)
        if getattr(process, "eta", 1.0) == 0:
            raise ConfigError(
                f"{self.name} needs a stochastic sampler (eta > 0): with eta = 0 resampled copies never part"
            )
        meter = Meter(process, scorer)
        g = torch.Generator().manual_seed(0 if seed is None else seed)
        state = process.init(cond, budget, seed)
        n, lam = budget, self.lam
        logw = torch.zeros(n, dtype=torch.float64)
        prev = torch.full((n,), float("-inf") if self.potential == "max" else 0.0, dtype=torch.float64)
        applied = torch.zeros(n, dtype=torch.float64)  # sum of the lineage's log potentials so far
        schedule = self.schedule(process.num_steps)
        resampled_at, ess_log, rewards = [], [], torch.zeros(n, dtype=torch.float64)
        taken = 0
        for k in schedule:
            process.propose(state, steps=k - taken)
            taken = k
            rewards = torch.tensor(checked_scores(scorer, [cond] * n, process.preview(state)), dtype=torch.float64)
            last = k == schedule[-1]
            if self.potential == "diff":
                log_g, prev = lam * (rewards - prev), rewards
            elif self.potential == "max":
                prev = torch.maximum(prev, rewards)
                log_g = lam * prev
            else:
                prev = prev + rewards
                log_g = lam * prev
            if last and self.potential != "diff":
                log_g = lam * rewards - applied  # the lineage's potentials now multiply to exp(lambda r(x0))
            applied = applied + log_g
            logw = logw + log_g + state.log_ratio  # the guided proposal's p/q since the last weighing
            state.log_ratio.zero_()
            w = normalise(logw)
            e = ess(w)
            ess_log.append(round(e, 3))
            if last:  # every final particle with its final weight, before the last resampling
                cands = tuple(
                    Candidate(x, self.extract(x), float(r), float(wi))
                    for x, r, wi in zip(process.preview(state), rewards.tolist(), w.tolist(), strict=True)
                )
            if self.adaptive and e >= self.ess_threshold * n:
                continue
            idx = resample(self.resampling, w, n, g)
            state = process.select(state, idx)
            prev, applied, rewards = prev[idx], applied[idx], rewards[idx]
            logw = torch.zeros(n, dtype=torch.float64)
            resampled_at.append(k)
        samples = process.preview(state)
        w = normalise(logw)
        if self.final == "argmax":
            pick = int(torch.argmax(rewards))
        else:
            pick = int(torch.multinomial(w, 1, generator=g))
        info = {
            "schedule": schedule,
            "resampled_at": resampled_at,
            "resamples": len(resampled_at),
            "ess": ess_log,
            "lam": lam,
            "potential": self.potential,
        }
        return Result(self.name, budget, samples[pick], self.extract(samples[pick]), cands, meter.cost(), info)
