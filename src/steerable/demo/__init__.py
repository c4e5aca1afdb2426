"""``steerable demo``: a short tour of every family, each section showing what steering changes.

- language models (:mod:`.lm`): what the built-in model does, PRM-guided
  search on problems greedy decoding gets wrong, activation steering;
- diffusion (:mod:`.diffusion`): FK steering beside best-of-N on digit
  targets at equal NFE, the samples drawn;
- control (:mod:`.control`): V-GPS beside the BC policy on the same seeded
  PointNav episodes, the paths drawn;
- agents (:mod:`.agents`): tree search over environment states beside the
  greedy agent on hard lookups.

The diffusion and control sections need their extras; without one the
section says so in a line and the tour goes on. Pictures go to ``out``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from steerable.demo.agents import agents_demo
from steerable.demo.control import control_demo
from steerable.demo.diffusion import diffusion_demo
from steerable.demo.lm import language_model_demo, measured_scaling, prm_demo, steering_demo

__all__ = [
    "agents_demo",
    "control_demo",
    "diffusion_demo",
    "language_model_demo",
    "measured_scaling",
    "prm_demo",
    "run_demo",
    "steering_demo",
]


def run_demo(
    gen, n: int = 100, selected: int = 12, targets: int = 8, episodes: int = 20, out: Path | None = None
) -> None:
    """The whole tour; ``out`` (default: a new temporary directory) receives the pictures."""
    con = Console()
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="steerable-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    took: list[tuple[str, float, float]] = []
    con.rule("[bold]steerable demo: language models, diffusion, control, agents")
    with timed("language models", took):
        language_model_demo(con, gen, n=n, selected=selected)
    with timed("diffusion", took):
        diffusion_demo(con, out, targets=targets)
    with timed("control", took):
        control_demo(con, out, episodes=episodes)
    with timed("agents", took):
        agents_demo(con)
    wall, cpu = sum(t[1] for t in took), sum(t[2] for t in took)
    parts = ", ".join(f"{name} {w:.0f}s / {c:.0f}s" for name, w, c in took)
    con.print(f"[dim]demo took {wall:.0f}s wall / {cpu:.0f}s CPU ({parts}). Pictures: {out}[/]")


@contextmanager
def timed(name: str, took: list[tuple[str, float, float]]) -> Iterator[None]:
    """Append ``(name, wall seconds, CPU seconds of this process)`` once the block ends."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    took.append((name, time.perf_counter() - wall, time.process_time() - cpu))
