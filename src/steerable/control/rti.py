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

from steerable.control.controllers import Controller
from steerable.diffusion.noise import gaussian, mix
from steerable.errors import ConfigError


@dataclass
class RTI(Controller):
    k_prime: int = 2
    mode: Literal["direct", "renoise"] = "direct"
    name = "rti"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.k_prime <= self.policy.steps_inference:
            raise ConfigError(f"rti: K' must be in [1, {self.policy.steps_inference}] (got {self.k_prime})")
        if self.mode not in ("direct", "renoise"):
            raise ConfigError(f"rti: mode must be direct or renoise (got {self.mode!r})")
        self.prev: torch.Tensor | None = None

    def reset(self, seed: int) -> None:
        super().reset(seed)
        self.prev = None  # the warm start never crosses episodes

    def act(self, obs_seen: list[np.ndarray], env=None) -> np.ndarray:
        if self.prev is None:
            full = self._sample(obs_seen, 1)
        else:
            guess = torch.cat([self.prev[:, 1:], self.prev[:, -1:]], dim=1)  # shifted one step, last repeated
            start = self.policy.steps_inference - self.k_prime
            x = guess
            if self.mode == "renoise":
                abar = self.proc.abar(torch.tensor([start]))[0]
                z = gaussian(torch.tensor([mix(self.seed, self.query, 11)]), 0, guess.numel()).float()
                x = abar.sqrt() * guess + (1 - abar).sqrt() * z.reshape(guess.shape)
            full = self._sample(obs_seen, 1, x_init=x, start=start)
        self.prev = full
        return self._run(self.policy.future(full)[0], k=1)
