"""TD3+BC (Fujimoto & Gu, 2021) as the PGD authors' ``rl/td3_bc.py`` runs it."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from steerable.control.policies.normalize import ActionScale, ObsScale
from steerable.control.training.pgd import (
    Transitions,
)


@dataclass(frozen=True)
class TD3BCConfig:
    """What a TD3+BC agent needs (``steerable control pgd`` passes its flags of the same names)."""

    hidden: int = 256
    lr: float = 3e-4
    alpha: float = 2.5
    gamma: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2
    noise_clip: float = 0.5

    @classmethod
    def of(cls, cfg) -> TD3BCConfig:
        return cls(**{f: getattr(cfg, f) for f in cls.__dataclass_fields__})


def td3bc_actor_loss(q: torch.Tensor, pi_action: torch.Tensor, action: torch.Tensor, alpha: float) -> torch.Tensor:
    """-lambda mean Q + mean (pi - a)^2 with lambda = alpha / mean |Q| (held constant: no gradient through it)."""
    lam = alpha / (q.abs().mean().detach() + 1e-7)
    return -lam * q.mean() + ((pi_action - action) ** 2).mean()


def td3_target(reward: torch.Tensor, done: torch.Tensor, q1_next: torch.Tensor, q2_next: torch.Tensor, gamma: float):
    """r + gamma (1 - done) min(Q1', Q2')."""
    return reward + gamma * (1 - done.float()) * torch.minimum(q1_next, q2_next)


def _net(inp: int, out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out)
    )


class TD3BC:
    """Actor pi(s) in [-1, 1]^act_dim (the env's bounds mapped by ``action_scale``), twin critics, targets."""

    def __init__(self, obs_scale: ObsScale, action_scale: ActionScale, cfg: TD3BCConfig) -> None:
        od, ad = len(obs_scale.mean), len(action_scale.low)
        self.obs_scale, self.action_scale, self.cfg = obs_scale, action_scale, cfg
        self.actor = _net(od, ad, cfg.hidden)
        self.q1, self.q2 = _net(od + ad, 1, cfg.hidden), _net(od + ad, 1, cfg.hidden)
        self.targets = [copy.deepcopy(m).requires_grad_(False) for m in (self.actor, self.q1, self.q2)]
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.opt_q = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=cfg.lr)

    def pi(self, obs_env: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        """Action in [-1, 1] units for observations in env units."""
        return torch.tanh((net or self.actor)(self.obs_scale(obs_env)))

    def act(self, obs_env: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            a = self.pi(torch.as_tensor(obs_env, dtype=torch.float32))
        return self.action_scale.denormalize(a).numpy()

    def _q(self, net: nn.Module, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return net(torch.cat([s, a], -1)).squeeze(-1)

    def update(self, b: dict[str, torch.Tensor]) -> dict[str, float]:
        """One step on a batch (obs, action in [-1, 1], reward, next_obs, done): targets, actor, two critic steps."""
        c = self.cfg
        with torch.no_grad():
            for net, tgt in zip((self.actor, self.q1, self.q2), self.targets, strict=True):
                for p, pt in zip(net.parameters(), tgt.parameters(), strict=True):
                    pt.lerp_(p, c.tau)
        s, s2 = self.obs_scale(b["obs"]), self.obs_scale(b["next_obs"])
        pi = torch.tanh(self.actor(s))
        q = self._q(self.q1, s, pi)
        actor_loss = td3bc_actor_loss(q, pi, b["action"], c.alpha)
        self.opt_actor.zero_grad()
        actor_loss.backward()
        self.opt_actor.step()
        actor_t, q1_t, q2_t = self.targets
        for _ in range(2):
            with torch.no_grad():
                noise = (torch.randn_like(b["action"]) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
                a2 = (torch.tanh(actor_t(s2)) + noise).clamp(-1, 1)
                y = td3_target(b["reward"], b["done"], self._q(q1_t, s2, a2), self._q(q2_t, s2, a2), c.gamma)
            q_loss = ((self._q(self.q1, s, b["action"]) - y) ** 2).mean() + (
                (self._q(self.q2, s, b["action"]) - y) ** 2
            ).mean()
            self.opt_q.zero_grad()
            q_loss.backward()
            self.opt_q.step()
        return {"actor_loss": actor_loss.item(), "q_loss": q_loss.item() / 2, "q_mean": q.mean().item()}


class TransitionSampler:
    """Uniform minibatches of transitions as tensors, actions mapped to [-1, 1]."""

    def __init__(self, t: Transitions, action_scale: ActionScale) -> None:
        self.t = {
            "obs": torch.as_tensor(t.obs),
            "action": action_scale.normalize(torch.as_tensor(t.action)).clamp(-1, 1),
            "reward": torch.as_tensor(t.reward),
            "next_obs": torch.as_tensor(t.next_obs),
            "done": torch.as_tensor(t.terminated),
        }
        self.n = len(t)

    def batch(self, size: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        i = torch.randint(self.n, (size,), generator=g)
        return {k: v[i] for k, v in self.t.items()}


@dataclass
class AgentController:
    """Runs the TD3+BC actor in :func:`steerable.control.evaluate.evaluate` (one action per query, no NFE)."""

    agent: TD3BC
    name: str = "td3bc"

    def reset(self, seeds: list[int]) -> None:
        n = len(seeds)
        self.nfe, self.scorer_calls, self.fork_steps, self.predictions = [0] * n, [0] * n, [0] * n, [0] * n

    def act(self, rows: list[int], seen: list[list[np.ndarray]], envs) -> dict[int, list[np.ndarray]]:
        acts = self.agent.act(np.stack([seen[r][-1] for r in rows]))
        for r in rows:
            self.predictions[r] += 1
        return {r: [a] for r, a in zip(rows, acts, strict=True)}
