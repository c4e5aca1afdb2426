"""Past-token prediction with test-time self-verification (Torne et al., "Learning Long-Context Robot Policies
via Past-Token Prediction", 2025; no official code was found, this follows the paper's text).

A long-context policy (``history`` > 0 frames) trained with ``past`` > 0
predicts the actions it took at the history's times along with the next
chunk (:mod:`steerable.control.policy`). At test time it samples M
candidates and keeps the one whose predicted past best matches the actions
actually executed:

    m* = argmin_m  sum_{k: t - k*stride >= 0} || a^m_{t - k*stride} - a_{t - k*stride} ||^2

(best-of-M with a past-consistency scorer, in normalised action units). With
M = 1, or before any action was taken, it is the plain policy. Cost per
prediction: M samples and M scorer calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from steerable.control.controllers import Controller
from steerable.errors import ConfigError


@dataclass
class PTP(Controller):
    m: int = 1
    name = "ptp"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.m < 1:
            raise ConfigError(f"ptp: M must be >= 1 (got {self.m})")
        if self.m > 1 and self.policy.past == 0:
            raise ConfigError("ptp verification needs a policy trained with --past > 0 (it predicts past actions)")

    def past_error(self, row: int, samples: torch.Tensor) -> torch.Tensor:
        """[M] squared distance of each sample's predicted past to row's executed actions (0 where none exist)."""
        p, stride, done = self.policy.past, self.policy.stride, self.executed[row]
        t = len(done)
        err = torch.zeros(len(samples), dtype=samples.dtype)
        for j, k in enumerate(range(p, 0, -1)):
            if t - k * stride >= 0:
                a = self.policy.action_scale.normalize(torch.as_tensor(done[t - k * stride]))
                err += ((samples[:, j] - a.to(samples.dtype)) ** 2).sum(-1)
        return err

    def act(self, rows: list[int], seen: list[list[np.ndarray]], envs) -> dict[int, np.ndarray]:
        samples = self._sample(rows, seen, self.m)  # [rows, M, past + H, act_dim]
        out = {}
        for i, r in enumerate(rows):
            pick = 0
            if self.m > 1 and self.executed[r]:
                self.scorer_calls[r] += self.m
                pick = int(torch.argmin(self.past_error(r, samples[i])))
            out[r] = self._run(r, self.policy.future(samples[i])[pick])
        return out
