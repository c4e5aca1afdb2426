"""V-GPS: value-guided policy steering (Nakamoto, Mees, Kumar and Levine, "Steering Your Generalists", CoRL 2024).

At every control step sample K action chunks from the (frozen) policy, score
each by the critic, and execute the argmax, or (``beta`` > 0) a chunk drawn
from softmax(Q / beta), as the authors' ``get_vgps_action`` does
(``jax.random.categorical(values / action_temp)``; temperature 0 is argmax).
The paper's critic scores the first action of each chunk; an
:class:`~steerable.control.q.IQLCritic` trained with ``--chunk H`` scores the
whole chunk instead (it says which in ``critic.chunk``). The policy and the
critic must normalise actions alike (:func:`~steerable.control.normalize.require_same`):
the authors' code normalises them differently. Cost per control step: K
policy samples (K x DDIM steps NFE) and K critic calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from steerable.control.controllers import Controller
from steerable.control.normalize import require_same
from steerable.control.q import IQLCritic
from steerable.diffusion.noise import mix
from steerable.errors import ConfigError


@dataclass
class VGPS(Controller):
    critic: IQLCritic | None = None
    k: int = 8
    beta: float = 0.0
    name = "vgps"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critic is None:
            raise ConfigError("vgps needs a critic: train one with `steerable control train-q` and pass --critic")
        if self.k < 1 or self.beta < 0:
            raise ConfigError(f"vgps: budget K must be >= 1 and beta >= 0 (got K={self.k}, beta={self.beta})")
        if self.critic.chunk > self.policy.horizon:
            raise ConfigError(
                f"vgps: the critic scores {self.critic.chunk} actions, the policy plans only {self.policy.horizon}"
            )
        require_same(self.policy.action_scale, self.critic.action_scale, "vgps")
        self.last_q: np.ndarray | None = None

    def act(self, rows: list[int], seen: list[list[np.ndarray]], envs) -> dict[int, np.ndarray]:
        chunks = self.policy.future(self._sample(rows, seen, self.k).flatten(0, 1))  # [rows*K, H, act_dim]
        obs = torch.as_tensor(np.stack([seen[r][-1] for r in rows]).astype(np.float32)).repeat_interleave(self.k, 0)
        with torch.no_grad():
            q = self.critic.q(obs, chunks).reshape(len(rows), self.k)
        self.last_q = q.numpy()
        out = {}
        for i, r in enumerate(rows):
            self.scorer_calls[r] += self.k
            if self.beta == 0:
                pick = int(torch.argmax(q[i]))
            else:
                g = torch.Generator().manual_seed(mix(self.seeds[r], self.query[r], 7) & ((1 << 63) - 1))
                pick = int(torch.multinomial(torch.softmax(q[i] / self.beta, 0), 1, generator=g))
            out[r] = self._run(r, chunks[i * self.k + pick])
        return out
