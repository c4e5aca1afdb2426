"""``steerable builtin ...``: the built-in model and PRM: where they live, (re)training, evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass

import typer

from steerable.cli.app import builtin_app
from steerable.cli.common import Printing, generator, quiet_transformers, threads
from steerable.cli.flags import command
from steerable.config import opt
from steerable.lm.loading import ModelConfig
from steerable.tasks.builtin.evaluate import EvalSet
from steerable.tasks.builtin.train import TrainConfig
from steerable.tasks.builtin.train_prm import PRMTrainConfig


@dataclass(frozen=True)
class Seed:
    seed: int = opt(0, "Seed for problems and sampling.", ge=0)


@builtin_app.command("info")
def builtin_info() -> None:
    """Where the built-in model and PRM live and how they were trained."""
    from steerable.lm.builtin import BUILTIN_PRM_DIR, info, path

    prm_json = BUILTIN_PRM_DIR / "prm.json"
    typer.echo(
        json.dumps(
            {
                "model": str(path()),
                "training": info(),
                "prm": str(BUILTIN_PRM_DIR),
                "prm_training": json.loads(prm_json.read_text()) if prm_json.exists() else None,
            },
            indent=2,
        )
    )


@command(builtin_app, "train")
def builtin_train(cfg: TrainConfig) -> None:
    """Train the built-in model from scratch."""
    from steerable.tasks.builtin.train import train

    if not cfg.threads:
        threads()
    quiet_transformers()
    rec = train(cfg)
    typer.echo(f"wrote {cfg.out}: {rec['steps']} steps in {rec['wall_seconds']}s, loss {rec['final_loss_ema']}")


@command(builtin_app, "train-prm")
def builtin_train_prm(cfg: PRMTrainConfig) -> None:
    """Train the built-in process reward model on the policy's own solutions."""
    from steerable.tasks.builtin.train_prm import train_prm

    threads()
    quiet_transformers()
    typer.echo(json.dumps(train_prm(cfg), indent=2))


@command(builtin_app, "eval")
def builtin_eval(evalset: EvalSet, seed: Seed, model: ModelConfig, printing: Printing) -> None:
    """Accuracy, by number of operations, refusal rates, style mix, solution length."""
    import sys

    from steerable.tasks.builtin.evaluate import evaluate

    gen = generator(model.model, model.device, model.dtype)
    res = evaluate(
        gen, split=evalset.split, n=evalset.n, n_requests=evalset.requests, seed=seed.seed, progress=sys.stderr.isatty()
    )
    if printing.json:
        typer.echo(json.dumps(res))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"built-in eval: {evalset.split} ({evalset.n} problems)")
    t.add_column("metric")
    t.add_column("value")
    for k, v in res.items():
        t.add_row(k, json.dumps(v))
    Console().print(t)
