"""An IQL Q-function trained offline, scoring either the first action or a whole action chunk.

Implicit Q-Learning (Kostrikov, Nair and Levine, "Offline Reinforcement
Learning with Implicit Q-Learning", eqs. 5-6):

    L_V = E[ L2^tau( min_i Qbar_i(s, a) - V(s) ) ],   L2^tau(u) = |tau - 1(u < 0)| u^2
    L_Q = E[ (r + gamma (1 - d) V(s') - Q_i(s, a))^2 ]  for each of two Q heads,

with Qbar a Polyak average of Q. V-GPS (Nakamoto et al.) scores each sampled
chunk by Q of its first action (``chunk=1``, the paper's way). With
``chunk=H`` the same losses run on H-step chunks: the "action" is the chunk
a_{t:t+H}, r is the discounted return over it (cut at termination) and the
bootstrap is gamma^n V(s_{t+n}); a chunk Q judges what is actually executed.
The critic records which it is (``critic.chunk``).

Actions are normalised by :class:`~steerable.control.policies.normalize.ActionScale`
(the env's bounds), the same map the policy uses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from steerable.control.policies.normalize import ActionScale, ObsScale
from steerable.errors import InputError


def mlp(inp: int, out: int, width: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = inp
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.LayerNorm(width), nn.ReLU()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, out))


class IQLCritic(nn.Module):
    """Two Q heads and a V head over normalised observations and (chunks of) normalised actions."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        chunk: int,
        obs_scale: ObsScale,
        action_scale: ActionScale,
        width: int = 256,
        depth: int = 2,
        gamma: float = 0.99,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.chunk, self.width, self.depth = obs_dim, act_dim, chunk, width, depth
        self.obs_scale, self.action_scale, self.gamma = obs_scale, action_scale, gamma
        self.q1 = mlp(obs_dim + act_dim * chunk, 1, width, depth)
        self.q2 = mlp(obs_dim + act_dim * chunk, 1, width, depth)
        self.v = mlp(obs_dim, 1, width, depth)

    def _in(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """obs [n, obs_dim] raw; actions [n, k >= chunk, act_dim] normalised -> [n, obs_dim + chunk*act_dim]."""
        return torch.cat([self.obs_scale(obs), actions[:, : self.chunk].reshape(len(obs), -1)], dim=1)

    def q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """min of the two heads: [n]. ``actions`` are normalised, [n, k, act_dim] with k >= chunk."""
        x = self._in(obs, actions)
        return torch.minimum(self.q1(x), self.q2(x)).squeeze(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.v(self.obs_scale(obs)).squeeze(-1)

    # ---- artefact on disk: safetensors + JSON header
    def header(self) -> dict:
        return {
            "kind": "iql-critic",
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "chunk": self.chunk,
            "width": self.width,
            "depth": self.depth,
            "gamma": self.gamma,
            "obs_scale": self.obs_scale.to_dict(),
            "action_scale": self.action_scale.to_dict(),
        }

    def save(self, out: str | Path, record: dict | None = None) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, out / "critic.safetensors")
        (out / "critic.json").write_text(json.dumps(self.header(), indent=2) + "\n")
        if record is not None:
            (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> IQLCritic:
        path = Path(path)
        try:
            h = json.loads((path / "critic.json").read_text())
        except FileNotFoundError:
            raise InputError(f"no critic at {path}: train one with `steerable control train-q --out {path}`") from None
        if h.get("kind") != "iql-critic":
            raise InputError(f"{path}/critic.json is not an IQL critic (kind {h.get('kind')!r})")
        critic = cls(
            h["obs_dim"],
            h["act_dim"],
            h["chunk"],
            ObsScale.from_dict(h["obs_scale"]),
            ActionScale.from_dict(h["action_scale"]),
            h["width"],
            h["depth"],
            h["gamma"],
        )
        critic.load_state_dict(load_file(path / "critic.safetensors"))
        return critic.eval()


class AllocationCritic(nn.Module):
    """V(s0, tau) = P(phi satisfied | start observation, allocation), an MLP on (normalised s0, tau / horizon)."""

    def __init__(self, obs_scale: ObsScale, width: int = 128, depth: int = 2, horizon: int = 100) -> None:
        super().__init__()
        self.obs_scale, self.width, self.depth, self.horizon = obs_scale, width, depth, horizon
        d, layers = len(obs_scale.mean) + 2, []
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.LayerNorm(width), nn.ReLU()]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, 1))

    def logit(self, obs0: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.obs_scale(obs0), tau.float() / self.horizon], dim=1)).squeeze(-1)

    def prob(self, obs0: np.ndarray, taus: Sequence[tuple[int, int]]) -> np.ndarray:
        """V per allocation: ``obs0`` one start observation [d] for all, or one per allocation [n, d]."""
        obs0 = np.asarray(obs0, np.float32)
        o = torch.as_tensor(obs0 if obs0.ndim == 2 else np.repeat(obs0[None], len(taus), 0))
        with torch.no_grad():
            return torch.sigmoid(self.logit(o, torch.as_tensor(np.asarray(taus)))).double().numpy()

    def save(self, out, record: dict | None = None) -> None:
        from pathlib import Path

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, out / "allocation_critic.safetensors")
        head = {"kind": "allocation-critic", "width": self.width, "depth": self.depth, "horizon": self.horizon,
                "obs_scale": self.obs_scale.to_dict()}  # fmt: skip
        (out / "allocation_critic.json").write_text(json.dumps(head, indent=2) + "\n")
        if record is not None:
            (out / "critic_training.json").write_text(json.dumps(record, indent=2) + "\n")

    @classmethod
    def load(cls, path) -> AllocationCritic:
        from pathlib import Path

        path = Path(path)
        try:
            h = json.loads((path / "allocation_critic.json").read_text())
        except FileNotFoundError:
            raise InputError(f"no allocation critic at {path}: train one with `steerable control tgpo`") from None
        critic = cls(ObsScale.from_dict(h["obs_scale"]), h["width"], h["depth"], h["horizon"])
        critic.load_state_dict(load_file(path / "allocation_critic.safetensors"))
        return critic.eval()
