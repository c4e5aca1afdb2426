"""Controllers: what a method does at each control step, over one diffusion policy.

A controller sees the episode's observations so far and returns the actions
to execute next. Every controller counts what it spends: ``nfe`` (denoiser
evaluations per row, from the diffusion process's usage) and ``scorer_calls``
(critic or verifier evaluations, one per scored candidate). The base
controller samples one chunk and runs ``execute`` of its actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from steerable.control.policy import DiffusionPolicy
from steerable.diffusion.noise import mix


@dataclass
class Spend:
    nfe: int = 0
    scorer_calls: int = 0
    predictions: int = 0  # policy queries (control steps at which the policy was asked)


@dataclass
class Controller:
    """Base BC: one chunk per query, its first ``execute`` actions run (``execute=None``: the policy's own)."""

    policy: DiffusionPolicy
    execute: int | None = None
    eta: float = 0.0
    name = "base"
    spend: Spend = field(default_factory=Spend, init=False)

    def __post_init__(self) -> None:
        self.proc = self.policy.process(eta=self.eta)
        self.executed: list[np.ndarray] = []

    def reset(self, seed: int) -> None:
        """A new episode: ``seed`` fixes every sampling draw in it."""
        self.seed, self.query = seed, 0
        self.executed = []

    def _sample(self, obs_seen: list[np.ndarray], n: int, **kw) -> torch.Tensor:
        cond = self.policy.condition(self.policy.frames(obs_seen))
        before = self.proc.usage.nfe
        out = self.policy.sample(cond, n, mix(self.seed, self.query), process=self.proc, **kw)
        self.spend.nfe += self.proc.usage.nfe - before
        self.spend.predictions += 1
        self.query += 1
        return out

    def act(self, obs_seen: list[np.ndarray], env=None) -> np.ndarray:
        chunk = self.policy.future(self._sample(obs_seen, 1))[0]
        return self._run(chunk)

    def _run(self, chunk: torch.Tensor, k: int | None = None) -> np.ndarray:
        """Env actions of the first ``k`` (default ``execute``) rows of a normalised chunk; remembered as executed."""
        k = k or self.execute or self.policy.execute
        actions = self.policy.to_env(chunk[:k])
        self.executed += list(actions)
        return actions
