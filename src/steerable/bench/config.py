"""What a ``steerable scale`` run measures, as a config dataclass (light: the CLI imports it to make its flags)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from steerable.config import check, distinct, opt
from steerable.errors import ConfigError

#: The widest sample budget a run may ask for (a billion samples ran until killed).
MAX_SAMPLE_BUDGET = 4096
#: The largest token budget.
MAX_TOKEN_BUDGET = 100_000_000


@dataclass(frozen=True)
class ScaleConfig:
    """What a ``steerable scale`` run measures: task, methods, budgets, sampling settings, where it writes."""

    out: Path = opt(..., "Output directory (results.jsonl, settings.json, summary.json, plot); reruns resume.")
    task: str = opt("builtin:hard", "builtin:easy|medium|hard|all, or a JSONL file (prompt, answer).", min_len=1)
    methods: tuple[str, ...] = opt(
        ("greedy", "sc", "bon", "wbon", "beam", "pf", "epf"), "Comma-separated strategies.", min_len=1, min_items=1
    )
    budgets: tuple[int, ...] = opt(
        (1, 4, 16),
        "Comma-separated budgets: samples / particles / simulations (at most 4096), or tokens with --budget-unit "
        "tokens.",
        ge=1,
        le=MAX_TOKEN_BUDGET,
        min_items=1,
    )
    budget_unit: Literal["samples", "tokens"] = opt(
        "samples", "samples, or tokens: each budget caps the tokens a run may generate."
    )
    tokens_per_sample: float | None = opt(
        None, "With token budgets, width = budget // this (default: measured from sampled solutions).", gt=0
    )
    limit: int | None = opt(None, "Items to use (default: all; 200 for built-in splits).", ge=1)
    temperature: tuple[float, ...] = opt((0.8,), "Sampling temperature; a comma list sweeps it.", ge=0, min_items=1)
    top_p: tuple[float, ...] = opt(
        (1.0,), "Nucleus mass; a comma list sweeps it (with every temperature).", gt=0, le=1, min_items=1
    )
    seed: int = opt(0, "Same seed, same results.", ge=0, lt=2**32)
    ray: bool = opt(False, "Spread items over Ray workers (extra [ray]).", flag="--ray")
    ray_address: str | None = opt(None, "A Ray cluster to join (default: start a local one).", min_len=1)
    ray_workers: int | None = opt(None, "Ray workers (default: one per CPU).", ge=1, le=4096)

    def __post_init__(self) -> None:
        check(self)
        distinct(self, "methods", "budgets", "temperature", "top_p")
        if self.budget_unit == "samples" and max(self.budgets) > MAX_SAMPLE_BUDGET:
            raise ConfigError(
                f"--budgets {max(self.budgets)} is more than the {MAX_SAMPLE_BUDGET} samples a run may use"
            )
