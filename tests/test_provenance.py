"""Every trained artifact's record names the command that remakes it, rebuilt from its config's fields."""

import dataclasses
import importlib
import shlex
from dataclasses import dataclass

import pytest
import typer

from steerable.cli.flags import config_command
from steerable.config import opt
from steerable.provenance import command_line, provenance

# (module, config class, command, a config with values off the defaults: tuples, dicts, bools, None, paths)
RUNS = [
    ("steerable.tasks.builtin.train", "TrainConfig", "builtin train",
     dict(out="runs/lm x", steps=300, batch_size=16, stop_at_hard=0.5, eval_every=0, threads=None)),
    ("steerable.tasks.builtin.train_prm", "PRMTrainConfig", "builtin train-prm",
     dict(out="p", temperatures=(0.5, 1.25), solutions="s.jsonl", calc_steps=0, threads=2)),
    ("steerable.diffusion.train", "TrainDiffusionConfig", "builtin train-diffusion",
     dict(out="d", world="mixture", minutes=0.5, lr=1e-05)),
    ("steerable.control.training.bc", "PolicyConfig", "control train-policy",
     dict(data="pn.npz", out="pol", history=2, past=2, steps=200, lr=0.0015)),
    ("steerable.control.training.iql", "TrainQConfig", "control train-q", dict(data="pn.npz", out="q", chunk=8)),
    ("steerable.control.training.tgpo", "TGPOConfig", "control tgpo", dict(data="pn.npz", out="t", steps=10)),
    ("steerable.control.training.dsrl", "DSRLConfig", "control dsrl",
     dict(policy="pol", out="s", variant="na", layer_norm=False, alpha_fixed=True, target_entropy=-2.5)),
    ("steerable.control.training.gorl", "GoRLConfig", "control gorl", dict(policy="pol", out="g", stages=2)),
    ("steerable.rl.run", "RLRunConfig", "train rl",
     dict(out="r", minutes=2.5, steps=3, reward="exact:1,format:0.2",
          options={"kl_cov_ratio": 0.02, "scale_std": False, "aspo_marker": "7", "igpo_probe": "A: "})),
]  # fmt: skip


def parse_back(cls, command: str):
    """The config the command line builds from ``command`` (the real flag binder, on a fresh app)."""
    got = []
    app = typer.Typer()
    config_command(app, "go", cls, got.append)
    app.command("other")(lambda: None)  # two commands: typer keeps the subcommand's name
    app(["go", *shlex.split(command)[3:]], standalone_mode=False)
    return got[0]


@pytest.mark.parametrize("module, name, cmd, values", RUNS, ids=[r[2] for r in RUNS])
def test_the_recorded_command_builds_the_same_config(module, name, cmd, values):
    if module.startswith("steerable.control"):
        pytest.importorskip("gymnasium")
    cls = getattr(importlib.import_module(module), name)
    cfg = cls(**values)
    line = command_line(cfg, cmd)
    assert line.startswith(f"steerable {cmd} --")
    assert parse_back(cls, line) == cfg


def test_the_commands_recorded_are_commands_of_the_cli():
    from steerable.cli import app

    def names(group, prefix=""):
        for c in group.registered_commands:
            yield prefix + (c.name or c.callback.__name__)
        for g in group.registered_groups:
            yield from names(g.typer_instance, prefix + g.name + " ")

    assert {r[2] for r in RUNS} <= set(names(app))


@dataclass(frozen=True)
class Secretive:
    out: str = opt(..., "Out.")
    minutes: float = opt(3.0, "Minutes.")
    steps: int | None = opt(None, "Steps.")
    key: str | None = opt(None, "A key.", envvar="SOME_KEY")
    hidden: int = opt(2, "Off the command line.", cli=False)
    loud: bool = opt(False, "Shout.", flag="--loud")
    names: tuple[str, ...] = opt((), "Repeat.", sep=None)


def test_unused_env_and_hidden_fields_are_left_off_and_the_rest_quoted():
    cfg = Secretive(out="my runs/a", steps=5, key="s3cret", hidden=9, loud=True, names=("a b", "c"))
    line = command_line(cfg, "x y", unused=("minutes",))
    assert line == "steerable x y --out 'my runs/a' --steps 5 --loud --names 'a b' --names c"
    assert "s3cret" not in str(provenance(cfg, "x y")["command"])


def test_the_record_heads_with_command_config_and_machine_from_python_too(monkeypatch):
    monkeypatch.setattr("sys.argv", ["pytest"])  # not the command line: the command is still whole
    rec = provenance(Secretive(out="o"), "x")
    assert rec["command"] == "steerable x --out o --minutes 3.0"
    assert rec["config"] == {**dataclasses.asdict(Secretive(out="o")), "names": []}  # as JSON holds it
    assert {"steerable", "python", "torch", "machine", "threads"} <= set(rec)
