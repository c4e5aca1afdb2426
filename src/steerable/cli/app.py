"""The typer apps every command module registers on: the root ``steerable`` and its groups."""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,  # help text is plain: "[ray]" is an extra's name, not markup
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Steer generative policies: activations, sampling and weights.",
)
builtin_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="The built-in world: model, PRM, evaluation."
)
steer_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Activation steering: extract, select-refusal, apply, eval."
)
control_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Control policies: data, train-q, train-policy, eval, ..."
)
train_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Change weights: reinforcement learning on TRL."
)
agent_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Language models that act: run, scale, train (the agent world)."
)
app.add_typer(builtin_app, name="builtin")
app.add_typer(agent_app, name="agent")
app.add_typer(steer_app, name="steer")
app.add_typer(control_app, name="control")
app.add_typer(train_app, name="train")
