"""Past-token prediction with test-time self-verification (Torne et al., "Learning Long-Context Robot Policies
via Past-Token Prediction", 2025; no official code was found, this follows the paper's text).

A long-context policy (``history`` > 0 frames) trained with ``past`` > 0
predicts the actions it took at the history's times along with the next
chunk (:mod:`steerable.control.policies.diffusion_policy`). At test time it samples M
candidates and keeps the one whose predicted past best matches the actions
actually executed:

    m* = argmin_m  sum_{k: t - k*stride >= 0} || a^m_{t - k*stride} - a_{t - k*stride} ||^2

(best-of-M with a past-consistency scorer, in normalised action units). With
M = 1, or before any action was taken, it is the plain policy (one sample).
Cost per verified prediction: M samples and M scorer calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from steerable.config import opt
from steerable.control.steering.controller import Controller
from steerable.control.steering.process import ControlProcess
from steerable.control.steering.scorers import PastConsistency
from steerable.errors import ConfigError
from steerable.search.best_of_n import BestOfN, Greedy


@dataclass
class PTP(Controller):
    """Best-of-M by past consistency: the search room's :class:`~steerable.search.best_of_n.BestOfN` over a
    one-chunk :class:`ControlProcess` with a :class:`~steerable.control.steering.scorers.PastConsistency` scorer."""

    m: int = opt(1, "Candidates per prediction, verified against the executed actions (M, the budget).", ge=1,
                 le=1024)  # fmt: skip
    name = "ptp"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.m > 1 and self.policy.past == 0:
            raise ConfigError("ptp verification needs a policy trained with --past > 0 (it predicts past actions)")
        self.process = ControlProcess(self.policy, eta=self.eta)
        self.scorer = PastConsistency(self.policy) if self.m > 1 else None

    def act(self, rows: list[int], seen: list[list[np.ndarray]], envs) -> dict[int, np.ndarray]:
        out = {}
        for r in rows:
            if self.scorer is not None and self.executed[r]:
                res = self._search(r, seen, envs, BestOfN(), self.scorer, self.m, self.process)
            else:  # nothing to verify against yet: the plain policy
                res = self._search(r, seen, envs, Greedy(), None, 1, self.process)
            out[r] = self._run(r, self.policy.future(res.sample.chunks[0][None])[0])
        return out
