"""Real-time iteration for diffusion policies (Duan, Yin and Kragic, "RTI-DP", IROS 2025).

The first prediction of an episode denoises fully. From then on the policy
executes one action per prediction and warm-starts: the guess G is the
previous chunk shifted by one step with its last action repeated, and only
the last K' denoising steps run from it. Two ways to put G at the noise level
of step K' are offered:

- ``direct`` (the authors' code, ``rti_sample``): G is used as x_t as it is;
  their forward-noising line computes a noise it never uses;
- ``renoise`` (SDEdit): x_t = sqrt(abar_t) G + sqrt(1 - abar_t) z.

Differences from the authors' code, on purpose: the warm start is reset at
every episode (their flag is set once in ``__init__``, so it carries across
episodes); and the K' steps are the last K' of the DDIM schedule the policy
samples with, stepped by the scheduler's own spacing, so the noise level of
each jump is right (their sparse steps such as [7, 5, 3, 1, 0] go through
``DDPMScheduler.step``, which assumes the previous timestep is t - 1: off by
one level at each jump).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from steerable.config import opt
from steerable.control.steering.controller import Controller
from steerable.errors import ConfigError
from steerable.streams import gaussian, stream


@dataclass
class RTI(Controller):
    k_prime: int = opt(2, "Denoising steps per warm-started prediction (K', the budget).", ge=1, le=10_000)
    mode: Literal["direct", "renoise"] = opt("direct", "The guess as x_t (authors'), or re-noised (SDEdit).")
    name = "rti"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k_prime > self.policy.steps_inference:
            raise ConfigError(f"rti: K' must be in [1, {self.policy.steps_inference}] (got {self.k_prime})")

    def reset(self, seeds: list[int]) -> None:
        super().reset(seeds)
        self.prev: list[torch.Tensor | None] = [None] * len(seeds)  # the warm start never crosses episodes

    def act(self, rows: list[int], seen: list[list[np.ndarray]], envs) -> dict[int, np.ndarray]:
        cold = [r for r in rows if self.prev[r] is None]
        warm = [r for r in rows if self.prev[r] is not None]
        fresh: dict[int, torch.Tensor] = {}
        if cold:
            fresh.update(zip(cold, self._sample(cold, seen)[:, 0], strict=True))
        if warm:
            prev = torch.stack([self.prev[r] for r in warm])  # [rows, past+H, act_dim]
            x = torch.cat([prev[:, 1:], prev[:, -1:]], dim=1)  # shifted one step, the last action repeated
            start = self.policy.steps_inference - self.k_prime
            if self.mode == "renoise":
                abar = self.proc.abar(torch.tensor([start]))[0]
                streams = torch.tensor([stream(self.seeds[r], self.query[r], 11) for r in warm])
                z = gaussian(streams, 0, x[0].numel()).float().reshape(x.shape)
                x = abar.sqrt() * x + (1 - abar).sqrt() * z
            fresh.update(zip(warm, self._sample(warm, seen, x_init=x, start=start)[:, 0], strict=True))
        out = {}
        for r in rows:
            self.prev[r] = fresh[r]
            out[r] = self._run(r, self.policy.future(fresh[r][None])[0], k=1)
        return out
