"""Configuration dataclasses whose fields carry their help text, and CLI commands made from them.

A method's configuration is a frozen dataclass; every field is declared with
:func:`opt` (default + help). :func:`config_command` turns such a class into a
typer command whose flags are exactly its fields, so a flag and a Python
argument never disagree (the habit of TRL's configs).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any


def opt(default: Any, help: str) -> Any:  # noqa: A002 - the word typer and argparse use
    """A dataclass field with a default (``...`` for required) and its help text."""
    if default is ...:
        return dataclasses.field(metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def config_command(
    app,
    name: str,
    cls: type,
    run: Callable[[Any], None],
    doc: str | None = None,
    extra: dict[str, tuple[Any, Any]] | None = None,
) -> None:
    """Register ``name`` on ``app``: its flags are ``cls``'s fields; it calls ``run(cls(**flags), **extra)``.

    ``extra`` adds flags that are not part of the configuration: name -> (annotation, typer.Option).
    """
    import typer

    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        default = ... if f.default is dataclasses.MISSING else f.default
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=hints[f.name],
                default=typer.Option(default, help=f.metadata.get("help", "")),
            )
        )
    for key, (annotation, option) in (extra or {}).items():
        params.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=option))
    names = {f.name for f in dataclasses.fields(cls)}

    def command(**kw: Any) -> None:
        run(cls(**{k: v for k, v in kw.items() if k in names}), **{k: v for k, v in kw.items() if k not in names})

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc or cls.__doc__
    command.__name__ = name.replace("-", "_")
    app.command(name)(command)
