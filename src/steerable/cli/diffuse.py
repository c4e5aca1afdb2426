"""``steerable diffuse ...`` and ``steerable builtin train-diffusion``: the built-in diffusion worlds.

They need the ``[diffusion]`` extra (diffusers, scikit-learn); without it each says so in one line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from steerable.cli.app import app, builtin_app
from steerable.cli.common import Printing, output_dir
from steerable.cli.flags import command
from steerable.config import check, distinct, opt
from steerable.diffusion.sample import DiffuseSampleConfig
from steerable.diffusion.train import TrainDiffusionConfig
from steerable.errors import InputError

diffuse_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Diffusion models: steer the built-in digits and 2-D mixture worlds (FK, DTS, best-of-N, guidance).",
)
app.add_typer(diffuse_app, name="diffuse")

#: the methods ``diffuse scale`` compares by default, and DTS's widening for budgets under ~32 rollouts
SCALE_METHODS = ("bon", "fk", "dts", "dts-star")


@dataclass(frozen=True)
class DiffuseScaleConfig:
    """What a ``steerable diffuse scale`` run measures (the same resumable runner as ``steerable scale``)."""

    out: Path = opt(..., "Output directory (results.jsonl, summary.json, accuracy_vs_nfe.png); reruns resume.")
    task: str = opt("builtin:digits", "builtin:digits (judge success) or builtin:mixture (distance to the target).")
    methods: tuple[str, ...] = opt(SCALE_METHODS, "Comma-separated methods.", min_len=1, min_items=1)
    budgets: tuple[int, ...] = opt(
        (2, 4, 8, 16), "Comma-separated budgets: samples / particles; a budget of N spends at most N x steps NFE.",
        ge=1, le=4096, min_items=1,
    )  # fmt: skip
    limit: int = opt(200, "Items: digits targets i mod 10 (seed i), or mixture seeds.", ge=2, le=100_000)
    seed: int = opt(0, "Same seed, same results.", ge=0, lt=2**32)
    steps: int = opt(50, "DDIM steps.", ge=1, le=1000)
    widen_c: float = opt(
        1.0, "DTS/DTS*: C (1 here; the paper's 2 with alpha 0.8 is best-of-N below ~32 rollouts).", gt=0
    )
    widen_alpha: float = opt(0.5, "DTS/DTS*: alpha of the progressive widening.", ge=0, le=1)
    guidance_scale: float = opt(1.0, "dps / fk-dps: lambda of the reward-gradient guidance.", ge=0, le=1e4)

    def __post_init__(self) -> None:
        check(self)
        distinct(self, "methods", "budgets")


@dataclass(frozen=True)
class StrategyOptions:
    """A method's own options, beside its defaults."""

    set: dict = opt(..., "A method option NAME=VALUE (repeat): lam=5, potential=max, widen_c=1 ...", factory=dict)


def _extra_missing() -> str | None:
    try:
        import diffusers  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as e:
        return f"diffuse needs the [diffusion] extra ({e.name} is missing): pip install 'steerable[diffusion]'"
    return None


def _need_extra() -> None:
    missing = _extra_missing()
    if missing:
        raise InputError(missing)


@command(builtin_app, "train-diffusion")
def train_diffusion(cfg: TrainDiffusionConfig) -> None:
    """Train a built-in denoiser (digits or the 2-D mixture) from scratch on one thread."""
    _need_extra()
    from steerable.diffusion.train import train

    rec = train(cfg)
    typer.echo(f"wrote {cfg.out}: {rec['steps']} steps in {rec['wall_seconds']}s, loss {rec['final_loss_ema']}")


def _with_budgets(text: str) -> str:
    """``text`` and what a budget N counts for each method (without the [diffusion] extra: ``text`` alone)."""
    try:
        from steerable.diffusion.registry import METHODS
    except ImportError:
        return text
    return f"{text} What a budget N counts:\n\n{METHODS.budget_help()}"


@command(
    diffuse_app,
    "sample",
    help=_with_budgets(
        "One steered run on a built-in world: samples.png (every candidate with its reward and verdict), result.json."
    ),
)
def sample(cfg: DiffuseSampleConfig, options: StrategyOptions, printing: Printing) -> None:
    _need_extra()
    from steerable.diffusion.sample import run_sample

    output_dir(cfg.out)
    record = run_sample(cfg, options.set)
    if printing.json:
        typer.echo(json.dumps(record))
        return
    verdict = "" if record["success"] is None else f", judge {record['judge']} ({'ok' if record['success'] else 'no'})"
    typer.echo(
        f"{record['method']} @ {record['budget']}: reward {record['reward']:.4f}{verdict}; "
        f"{record['cost'].get('nfe', 0)} NFE, {record['cost'].get('scorer_calls', 0)} reward calls; "
        f"wrote {cfg.out / 'samples.png'}"
    )


@command(
    diffuse_app,
    "scale",
    help=_with_budgets(
        "Judge success (digits) or distance to the exact target (mixture) against NFE, per method and budget."
    ),
)
def scale(run: DiffuseScaleConfig, printing: Printing) -> None:
    _need_extra()
    from steerable.bench.scale import run_scale
    from steerable.diffusion.registry import method
    from steerable.diffusion.scale import DiffusionExecutor, items, mixture_distances
    from steerable.diffusion.worlds import world_name

    world = world_name(run.task)
    for m in run.methods:
        method(m)
    widening = {"widen_c": run.widen_c, "widen_alpha": run.widen_alpha}
    options = {m: widening for m in run.methods if m.startswith("dts")}
    output_dir(run.out)
    executor = DiffusionExecutor(run.task, options, run.guidance_scale, run.steps)
    summary = run_scale(
        items(world, run.limit),
        list(run.methods),
        list(run.budgets),
        None,
        None,
        None,
        run.out,
        seed=run.seed,
        progress=sys.stderr.isatty(),
        executor=executor,
        strategies=executor.strategy,
        cost=("reward", "nfe", "reward_calls", "seconds"),
        x="nfe",
    )
    if world == "mixture":  # accuracy means nothing here: the distance of the answers to the exact target does
        from steerable.bench.scale import read_results

        dist = mixture_distances(read_results(run.out / "results.jsonl"), 10.0)
        for r in summary["rows"]:
            r.pop("accuracy")
            r.update(dist.get((r["method"], r["budget"]), {}))
        (run.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if printing.json:
        typer.echo(json.dumps(summary))
        return
    from rich.console import Console
    from rich.table import Table

    cols = ["method", "budget", "items"] + (["mmd2", "mode_tv"] if world == "mixture" else ["accuracy"])
    cols += ["reward", "nfe", "reward_calls", "seconds", "errors"]
    table = Table(title=f"{run.task}, {run.limit} items ({run.out})")
    for c in cols:
        table.add_column(c)
    for r in summary["rows"]:
        table.add_row(*(str(r.get(c, "")) for c in cols))
    Console().print(table)
