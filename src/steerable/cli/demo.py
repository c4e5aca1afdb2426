"""``steerable demo``: the tour ``make demo`` runs."""

from __future__ import annotations

from dataclasses import dataclass

from steerable.cli.app import app
from steerable.cli.common import generator
from steerable.cli.flags import command
from steerable.config import opt
from steerable.lm.loading import DeviceConfig


@dataclass(frozen=True)
class DemoConfig:
    n: int = opt(100, "Problems per split for the accuracy table.", ge=1, le=100_000)


@command(app, "demo")
def demo(cfg: DemoConfig, device: DeviceConfig) -> None:
    """A short tour of the built-in world: what the model does, and how well."""
    from steerable.demo import run_demo

    run_demo(generator("builtin", device.device, device.dtype), n=cfg.n)
