"""``steerable scale``: accuracy against compute for each method and budget."""

from __future__ import annotations

import json
import sys

import typer

from steerable.bench.config import ScaleConfig
from steerable.bench.distributed import ScaleSetup
from steerable.cli.app import app
from steerable.cli.common import Printing, output_dir, quiet_transformers, threads
from steerable.cli.flags import command
from steerable.errors import ConfigError

#: Seconds between progress lines when stderr is not a terminal (nohup, a pipe, a CI log).
REPORT_EVERY = 60.0


def _help() -> str:
    from steerable.search.registry import METHODS

    return (
        "Inference-time scaling: accuracy against compute for each method and budget. What a budget N counts:\n\n"
        + METHODS.budget_help()
    )


@command(app, "scale", help=_help())
def scale(run: ScaleConfig, setup: ScaleSetup, printing: Printing) -> None:
    from steerable.bench.report import table, title_of
    from steerable.bench.scale import run_scale
    from steerable.bench.settings import scale_settings
    from steerable.lm.types import SamplingParams
    from steerable.search.registry import UNSCORED, make_strategy
    from steerable.tasks.answers import make_checker
    from steerable.tasks.loader import load_task

    checker = make_checker(setup.answer_format, setup.answer_regex)
    for m in run.methods:
        make_strategy(m, checker.extract)
    needy = [m for m in run.methods if m not in UNSCORED]
    if setup.scorer in ("none", "") and needy:  # else every item of theirs fails and reports accuracy 0
        raise ConfigError(
            f"--methods {needy[0]} needs a scorer but --scorer is none: give --scorer builtin-prm or oracle, or use "
            f"only {', '.join(sorted(UNSCORED))}"
        )
    for t in run.temperature:
        SamplingParams(temperature=t)  # a bad value is a one-line error before any model is loaded
    items = load_task(run.task, limit=run.limit, seed=run.seed)
    output_dir(run.out)
    threads()
    quiet_transformers()
    built = None if run.ray else setup.build()
    for t, p in [(t, p) for t in run.temperature for p in run.top_p]:
        where = run.out
        if len(run.temperature) > 1:
            where = where / f"temperature-{t:g}"
        if len(run.top_p) > 1:
            where = where / f"top-p-{p:g}"
        executor = None
        if run.ray:
            from steerable.bench.distributed import RayExecutor

            executor = RayExecutor(setup, t, p, address=run.ray_address, workers=run.ray_workers)
        try:
            summary = run_scale(
                items,
                list(run.methods),
                list(run.budgets),
                built.process_factory(t, p) if built else None,
                built.scorer if built else None,
                checker,
                where,
                seed=run.seed,
                progress=sys.stderr.isatty(),
                unit=run.budget_unit,
                tokens_per_sample=run.tokens_per_sample,
                executor=executor,
                settings=scale_settings(run.task, run.seed, setup, t, p),
                report_every=None if sys.stderr.isatty() else REPORT_EVERY,
            )
        finally:
            if executor is not None:
                executor.close()
        if printing.json:
            typer.echo(json.dumps({"temperature": t, "top_p": p, **summary}))
            continue
        from rich.console import Console

        unit_note = f" ({summary['tokens_per_sample']:g} tokens per sample)" if run.budget_unit == "tokens" else ""
        title = f"{title_of(summary['settings'], len(items))}{unit_note}: {where}"
        # off a terminal rich would fit the table into 80 columns and cut numbers ("2051.…"): give it room
        Console(width=None if sys.stdout.isatty() else 400).print(table(summary, title))
