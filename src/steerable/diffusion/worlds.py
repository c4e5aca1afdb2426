"""The shipped worlds by name: ``builtin:digits`` and ``builtin:mixture`` (denoiser, scheduler, reward)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerable.errors import ConfigError

WORLDS = ("digits", "mixture")


@dataclass(frozen=True)
class World:
    """A denoiser with its training scheduler and the reward that steers it."""

    name: str
    denoiser: Any
    scheduler: Any
    reward: Any

    def process(self, eta: float = 1.0, num_steps: int = 50, segment: int = 1, guidance: Any = None):
        from steerable.diffusion.process import DiffusionProcess

        return DiffusionProcess(
            self.denoiser, self.scheduler, num_steps=num_steps, eta=eta, segment=segment, guidance=guidance
        )


def world_name(spec: str) -> str:
    name = spec.removeprefix("builtin:")
    if name not in WORLDS:
        raise ConfigError(f"unknown diffusion world {spec!r}: use builtin:digits or builtin:mixture")
    return name


@functools.cache
def load_world(spec: str, path: str | None = None) -> World:
    """A built-in world; ``path`` loads its denoiser from another directory (e.g. a fresh ``train-diffusion``)."""
    from diffusers import DDPMScheduler

    from steerable.diffusion.denoiser import MLPDenoiser

    name = world_name(spec)
    d = Path(path) if path else Path(__file__).parent / "builtin" / name
    if not (d / "config.json").exists():
        raise ConfigError(f"no diffusion model in {d}: train one with steerable builtin train-diffusion --out {d}")
    denoiser = MLPDenoiser.from_pretrained(d).eval().requires_grad_(False)
    scheduler = DDPMScheduler.from_pretrained(d)
    if name == "digits":
        from steerable.diffusion.digits import DigitReward

        reward = DigitReward.load(d)
    else:
        from steerable.diffusion.mixture import MixtureReward

        reward = MixtureReward()
    return World(name, denoiser, scheduler, reward)
