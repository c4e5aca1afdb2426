"""The ``steerable`` command: one sub-command per job; this module only wires."""

from __future__ import annotations

import typer

from steerable.errors import SteerableError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Steer generative policies.")
builtin_app = typer.Typer(no_args_is_help=True, help="The built-in world: model, PRM, evaluation.")
app.add_typer(builtin_app, name="builtin")


@builtin_app.command("train")
def builtin_train(
    out: str = typer.Option(..., help="Directory to write the model to."),
    minutes: float = typer.Option(20.0, help="Wall-time budget; the LR schedule spans it."),
    steps: int | None = typer.Option(None, help="Exact number of steps (reproducible); overrides --minutes."),
    seed: int = typer.Option(0, help="Seed for data and initialisation."),
    batch_size: int = typer.Option(64, help="Sequences per step."),
    lr: float = typer.Option(2e-3, help="Peak learning rate."),
    threads: int | None = typer.Option(None, help="torch threads (default: torch's choice)."),
) -> None:
    """Train the built-in model from scratch on the built-in world."""
    from steerable.tasks.builtin.train import TrainConfig, train

    rec = train(TrainConfig(out=out, minutes=minutes, steps=steps, seed=seed, batch_size=batch_size, lr=lr,
                            threads=threads))
    typer.echo(f"wrote {out}: {rec['steps']} steps in {rec['wall_seconds']}s, loss {rec['final_loss_ema']}")


def main() -> None:
    try:
        app()
    except SteerableError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None
