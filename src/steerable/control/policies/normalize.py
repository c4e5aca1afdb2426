"""The one action normalisation shared by every learned part of the control room.

V-GPS's authors normalise the policy's actions by mean/std and the critic's
by min/max to [-1, 1], so a critic scores actions in the wrong units
unless both agree. Here every model (diffusion policy, Q-function, latent
policies) maps actions to [-1, 1] by the env's action bounds and stores the
bounds it used; :func:`require_same` refuses to pair two models whose
bounds differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from steerable.errors import IncompatibleArtifactError


@dataclass(frozen=True)
class ActionScale:
    """Maps env actions in [low, high] to [-1, 1] and back (elementwise)."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def from_space(cls, space) -> ActionScale:
        return cls(tuple(float(v) for v in np.ravel(space.low)), tuple(float(v) for v in np.ravel(space.high)))

    def _bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.low, dtype=like.dtype), torch.tensor(self.high, dtype=like.dtype)

    def normalize(self, a: torch.Tensor) -> torch.Tensor:
        low, high = self._bounds(a)
        return 2 * (a - low) / (high - low) - 1

    def denormalize(self, a: torch.Tensor) -> torch.Tensor:
        low, high = self._bounds(a)
        return low + (a + 1) * (high - low) / 2

    def to_dict(self) -> dict:
        return {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, d: dict) -> ActionScale:
        return cls(tuple(d["low"]), tuple(d["high"]))


def require_same(a: ActionScale, b: ActionScale, what: str) -> None:
    if a != b:
        raise IncompatibleArtifactError(
            f"{what}: the policy normalises actions by {a.to_dict()} and the critic by {b.to_dict()}: "
            "train both on the same env's data"
        )


@dataclass(frozen=True)
class ObsScale:
    """Per-dimension mean/std of observations, fitted on a dataset (std floored so constant inputs stay finite)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, obs: np.ndarray) -> ObsScale:
        return cls(tuple(map(float, obs.mean(0))), tuple(float(max(s, 1e-3)) for s in obs.std(0)))

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - torch.tensor(self.mean, dtype=obs.dtype)) / torch.tensor(self.std, dtype=obs.dtype)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> ObsScale:
        return cls(tuple(d["mean"]), tuple(d["std"]))
