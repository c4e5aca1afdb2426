"""Acting with a learnt noise policy (DSRL, GoRL's latent policy) through the frozen diffusion policy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from steerable.control.steering.controller import Controller


@dataclass
class DSRLController(Controller):
    """Acts with the learnt noise policy (its mean: deterministic) decoded through the frozen diffusion policy."""

    noise_policy: object = None
    name = "dsrl"

    def act(self, rows: list[int], seen: list[list[np.ndarray]], envs) -> dict[int, np.ndarray]:
        w, _ = self.noise_policy.predict(np.stack([seen[r][-1] for r in rows]), deterministic=True)
        x = torch.as_tensor(np.asarray(w, np.float32)).reshape(len(rows), *self.policy.sample_shape)
        chunks = self.policy.future(self._sample(rows, seen, x_init=x)[:, 0])
        return {r: self._run(r, chunks[i]) for i, r in enumerate(rows)}
