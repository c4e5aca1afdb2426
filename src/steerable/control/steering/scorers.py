"""Scorers of control plans (:class:`~steerable.control.steering.process.Plan`): critic, past consistency, return.

Each is a ``Scorer[Root]`` (:class:`~steerable.reward.scorer.Scorer`): it declares its range,
counts its ``calls`` (one per plan scored) and scores a batch of plans in one
call of its model.

- :class:`QScorer`: Q(s, a) of the first chunk at the root observation (V-GPS;
  the critic scores the first action or the whole chunk, as it was trained).
- :class:`PastConsistency`: minus the squared distance between the past actions
  a plan's first chunk predicts and those the episode executed (past-token
  prediction's self-verification), in normalised action units.
- :class:`ReturnToGo`: the discounted reward a plan collected in its fork plus
  the discounted value of where it ended, r_0 + gamma r_1 + ... + gamma^n V(s_n)
  (no value after a termination): lookahead search's score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from steerable.control.policies.critics import IQLCritic
from steerable.control.policies.diffusion_policy import DiffusionPolicy
from steerable.control.steering.process import Plan, Root
from steerable.errors import ConfigError

INF = float("inf")


def _first(plans: Sequence[Plan], where: str) -> list[torch.Tensor]:
    if any(not p.chunks for p in plans):
        raise ConfigError(f"{where} scores planned chunks: propose at least one step before scoring")
    return [p.chunks[0] for p in plans]


@dataclass
class QScorer:
    critic: IQLCritic
    policy: DiffusionPolicy
    range: tuple[float, float] = (-INF, INF)
    calls: int = 0
    forward_tokens: int = 0

    def score(self, conds: Sequence[Root], samples: Sequence[Plan]) -> list[float]:
        chunks = self.policy.future(torch.stack(_first(samples, "QScorer")))
        obs = torch.as_tensor(np.stack([p.obs for p in samples]).astype(np.float32))
        self.calls += len(samples)
        with torch.no_grad():
            return self.critic.q(obs, chunks).double().tolist()


@dataclass
class PastConsistency:
    policy: DiffusionPolicy
    range: tuple[float, float] = (-INF, 0.0)
    calls: int = 0
    forward_tokens: int = 0

    def __post_init__(self) -> None:
        if self.policy.past == 0:
            raise ConfigError("past consistency needs a policy trained with --past > 0 (it predicts past actions)")

    def error(self, plan: Plan) -> float:
        """sum_k || a^pred_{t - k*stride} - a_{t - k*stride} ||^2 over the executed steps the plan predicts."""
        p, stride, done = self.policy.past, self.policy.stride, plan.executed
        t, chunk, err = len(done), plan.chunks[0], 0.0
        for j, k in enumerate(range(p, 0, -1)):
            if t - k * stride >= 0:
                a = self.policy.action_scale.normalize(torch.as_tensor(done[t - k * stride])).to(chunk.dtype)
                err += float(((chunk[j] - a) ** 2).sum())
        return err

    def score(self, conds: Sequence[Root], samples: Sequence[Plan]) -> list[float]:
        _first(samples, "PastConsistency")
        self.calls += len(samples)
        return [-self.error(p) for p in samples]


@dataclass
class ReturnToGo:
    critic: IQLCritic
    gamma: float = 0.99
    range: tuple[float, float] = (-INF, INF)
    calls: int = 0
    forward_tokens: int = 0

    def score(self, conds: Sequence[Root], samples: Sequence[Plan]) -> list[float]:
        if any(p.last_obs is None for p in samples):
            raise ConfigError("ReturnToGo scores rolled-out plans: build the control process with rollout=True")
        obs = torch.as_tensor(np.stack([p.last_obs for p in samples]).astype(np.float32))
        self.calls += len(samples)
        with torch.no_grad():
            v = self.critic.value(obs).double().tolist()
        out = []
        for i, p in enumerate(samples):
            ret = sum(self.gamma**k * r for k, r in enumerate(p.rewards))
            out.append(ret + (0.0 if p.terminated else self.gamma**p.steps * v[i]))
        return out
