"""The ``steerable`` command: one module per command group; every flag comes from a config dataclass.

Each module registers its commands on the apps of :mod:`steerable.cli.app`
with :func:`steerable.cli.flags.command`, which makes a command's flags from the
config dataclasses its function takes. A new command is a new module here,
imported below. :func:`main` turns every user error (a bad flag, a bad file,
any :class:`~steerable.errors.SteerableError`) into one line on stderr and
exit code 2.
"""

from __future__ import annotations

import sys

import typer
from typer._click.exceptions import NoArgsIsHelpError  # typer vendors click; this one is not re-exported

from steerable.cli import (  # noqa: F401  (each module registers its commands)
    agent,
    builtin,
    control,
    demo,
    diffuse,
    generate,
    scale,
    serve,
    steer,
    steer_rice,
    steer_train,
    train,
)
from steerable.cli.app import app
from steerable.errors import SteerableError

__all__ = ["app", "main", "run"]


def main() -> None:
    """The ``steerable`` entry point: exits with :func:`run`'s code."""
    sys.exit(run())


def run(argv: list[str] | None = None) -> int:
    """Run ``steerable`` on ``argv`` (default: the process's); returns the exit code (2 for user errors)."""
    try:
        app(args=argv, prog_name="steerable", standalone_mode=False)
    except NoArgsIsHelpError as e:  # `steerable` or a group alone: its help
        typer.echo(e.format_message())
        return 0
    except typer.TyperException as e:  # typer's own click: a bad flag value, a missing option, an unknown one
        ctx = getattr(e, "ctx", None)
        return _fail((f"{ctx.command_path}: " if ctx is not None else "") + e.format_message())
    except typer.Abort:
        return _fail("aborted")
    except typer.Exit as e:
        return e.exit_code
    except SteerableError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        return 130
    return 0


def _fail(message: str) -> int:
    typer.echo("error: " + " ".join(message.split("\n")).strip(), err=True)
    return 2
