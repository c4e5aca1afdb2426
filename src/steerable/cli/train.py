"""``steerable train rl``: GRPO-family RL on TRL."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import typer

from steerable.cli.app import train_app
from steerable.cli.common import Printing, output_dir, quiet_transformers, threads
from steerable.cli.flags import command
from steerable.rl.run import RLRunConfig


@command(train_app, "rl")
def train_rl_cmd(cfg: RLRunConfig, printing: Printing) -> None:
    """GRPO-family RL from verifiable rewards (TRL), with the papers' advantages and losses."""
    from steerable.rl.run import parse_options, train_rl

    cfg = dataclasses.replace(cfg, options=parse_options(cfg.options))  # typed values, checked before any loading
    output_dir(Path(cfg.out))
    threads()
    quiet_transformers()
    summary = train_rl(cfg, progress=sys.stderr.isatty())
    typer.echo(json.dumps(summary) if printing.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
