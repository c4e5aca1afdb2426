"""``steerable demo``: the tour ``make demo`` runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steerable.cli.app import app
from steerable.cli.common import generator
from steerable.cli.flags import command
from steerable.config import opt
from steerable.lm.loading import DeviceConfig


@dataclass(frozen=True)
class DemoConfig:
    n: int = opt(100, "Problems per split for the accuracy table.", ge=1, le=100_000)
    selected: int = opt(12, "Hard problems greedy decoding gets wrong, for the search table.", ge=1, le=200)
    targets: int = opt(8, "Digit targets for the diffusion section.", ge=1, le=1000)
    episodes: int = opt(20, "Seeded PointNav episodes for the control section.", ge=1, le=10_000)
    out: Path | None = opt(None, "Directory for the pictures (default: a new temporary directory).")


@command(app, "demo")
def demo(cfg: DemoConfig, device: DeviceConfig) -> None:
    """A short tour of every family: the built-in language model (search, activation steering), digits diffusion
    (FK steering vs best-of-N) and PointNav control (V-GPS vs the BC policy), each beside its unsteered baseline.

    Needs the [diffusion] and [control] extras for those sections (make demo installs them); without one, its
    section says so and the tour goes on."""
    from steerable.demo import run_demo

    run_demo(
        generator("builtin", device.device, device.dtype),
        n=cfg.n,
        selected=cfg.selected,
        targets=cfg.targets,
        episodes=cfg.episodes,
        out=cfg.out,
    )
