"""Typer commands made from config dataclasses: one flag per field, checked by :mod:`steerable.config`.

:func:`command` registers a function whose parameters are config dataclasses
(their fields declared with :func:`steerable.config.opt`); every field becomes
a flag with the field's help, bounds and default, and the function receives
the checked instance. :func:`config_command` does it for a function of one
config. A flag, a request field and a Python argument therefore never
disagree (the habit of TRL's configs), and a bad value is one
:class:`~steerable.errors.ConfigError` line naming the flag.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import typer

from steerable.config import _bounds_text, _coerce, _hints, _shown, flag_name, parse_pairs
from steerable.errors import ConfigError


def command(
    app: typer.Typer,
    name: str | None = None,
    *,
    help: str | None = None,  # noqa: A002 - typer's word
    classes: Iterable[type] = (),
) -> Callable:
    """Register the decorated function on the typer ``app``; its config parameters become flags.

    A parameter annotated with a config dataclass becomes one flag per field
    (see :func:`~steerable.config.opt`); the function receives the checked
    instance. A parameter's default may be an instance whose values replace
    the class's defaults for this command (``sampling: SamplingParams =
    SamplingParams(temperature=0.0)``). Other parameters (positional
    arguments) are passed to typer as declared. Annotations are resolved in
    the function's module; ``classes`` names the ones it does not hold (a
    command defined inside a function, over classes imported there). Every
    value is checked against its field's type and bounds before the function
    runs; an error is one :class:`ConfigError` line naming the flag.
    """
    local = {c.__name__: c for c in classes}

    def register(fn: Callable) -> Callable:
        hints = typing.get_type_hints(fn, localns=local)
        params: list[inspect.Parameter] = []
        groups: dict[str, tuple[type, Any, dict[str, tuple[str, Any, Mapping]]]] = {}
        seen: dict[str, str] = {}
        for p in inspect.signature(fn).parameters.values():
            tp = hints.get(p.name, p.annotation)
            if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=tp))
                _claim(seen, p.name, fn.__name__)
                continue
            base = p.default if dataclasses.is_dataclass(p.default) else None
            flags: dict[str, tuple[str, Any, Mapping]] = {}
            field_hints = _hints(tp)
            for f in dataclasses.fields(tp):
                if not f.init or not f.metadata.get("cli", bool(f.metadata)):
                    continue
                default = _field_default(f, base)
                _claim(seen, f.name, fn.__name__)
                annotation, option = _flag(f, field_hints[f.name], default)
                params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                                default=option))  # fmt: skip
                flags[f.name] = (flag_name(f), field_hints[f.name], f.metadata)
            groups[p.name] = (tp, base, flags)

        @functools.wraps(fn)
        def run(**kw: Any) -> Any:
            args = {k: v for k, v in kw.items() if not any(k in g[2] for g in groups.values())}
            for pname, (cls, base, flags) in groups.items():
                values = {k: _from_flag(flags[k][0], kw[k], tp, meta) for k, (_, tp, meta) in flags.items()}
                args[pname] = dataclasses.replace(base, **values) if base is not None else cls(**values)
            return fn(**args)

        del run.__wrapped__  # typer must see the flags' signature, not fn's
        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {}
        run.configs = {k: g[0] for k, g in groups.items()}  # type: ignore[attr-defined]  (tests walk these)
        app.command(name, help=help)(run)
        return fn

    return register


def config_command(app: typer.Typer, name: str, cls: type, run: Callable[[Any], None], doc: str | None = None) -> None:
    """Register ``name`` on ``app``: its flags are ``cls``'s fields; it calls ``run(cls(**flags))``."""

    def command_fn(cfg: cls) -> None:  # type: ignore[valid-type]
        run(cfg)

    command_fn.__annotations__ = {"cfg": cls, "return": None}
    command_fn.__name__ = name.replace("-", "_")
    command(app, name, help=doc or cls.__doc__)(command_fn)


def _claim(seen: dict[str, str], name: str, where: str) -> None:
    if name in seen:
        raise TypeError(f"{where}: two flags named {name!r}; rename one of the config fields")
    seen[name] = where


def _field_default(f: dataclasses.Field, base: Any) -> Any:
    if base is not None:
        return getattr(base, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return ...


def _flag(f: dataclasses.Field, tp: Any, default: Any) -> tuple[Any, Any]:
    """The annotation typer parses and its ``typer.Option``, for field ``f``."""
    meta = f.metadata
    inner, optional = _unoptional(tp)
    metavar = _METAVARS.get(inner)
    origin = typing.get_origin(inner)
    text = meta.get("help", "")
    if origin is Literal:
        choices = [str(a) for a in typing.get_args(inner)]
        if not all(c in text for c in choices):
            text += f" One of: {', '.join(choices)}."
        annotation = str
    elif origin is tuple and meta.get("sep"):
        annotation = str
        item = (typing.get_args(inner) or (str,))[0]
        metavar = f"{_METAVARS.get(item, 'TEXT')}{meta['sep']}..."
        if default not in (None, ...):
            default = meta["sep"].join(str(x) for x in default)
    elif origin is tuple or inner is dict or origin is dict:
        annotation = list[str]
        metavar = "NAME=VALUE" if origin is not tuple else "TEXT"
        if isinstance(default, dict):
            default = [f"{k}={v}" for k, v in default.items()]
        elif default not in (None, ...):
            default = [str(x) for x in default]
    else:
        annotation = inner
    bounds = _bounds_text(meta)
    if bounds:
        text += f" ({bounds})"
    decls = [flag_name(f)] if inner is not bool or meta.get("flag") else []
    option = typer.Option(
        default, *decls, help=text.strip(), envvar=meta.get("envvar"), show_envvar=False, metavar=metavar
    )
    return (annotation | None if optional or default is None else annotation), option


_METAVARS = {int: "INT", float: "NUMBER", str: "TEXT", Path: "PATH"}


def _unoptional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(arms) == 1 and len(typing.get_args(tp)) == 2:
            return arms[0], True
    return tp, False


def _from_flag(flag: str, raw: Any, tp: Any, meta: Mapping[str, Any]) -> Any:
    """A flag's parsed value as the field's type (split lists, NAME=VALUE pairs), checked against its bounds."""
    inner, _ = _unoptional(tp)
    origin = typing.get_origin(inner)
    value = raw
    if raw is not None and origin is tuple:
        args = typing.get_args(inner)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else str
        sep = meta.get("sep")
        parts = list(raw) if not isinstance(raw, str) else ([] if raw == "" else raw.split(sep))
        value = tuple(_parse_item(flag, x.strip() if isinstance(x, str) and sep else x, item, raw, sep) for x in parts)
    elif raw is not None and (inner is dict or origin is dict):
        value = parse_pairs(raw, flag)
    return _coerce(flag, value, tp, meta)


def _parse_item(flag: str, text: Any, tp: Any, raw: Any, sep: str | None) -> Any:
    if not isinstance(text, str):
        return text
    if sep and text == "":
        raise ConfigError(f"{flag} has an empty item (got {_shown(raw)}): separate values with {sep!r}")
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            kind = "integers" if tp is int else "numbers"
            raise ConfigError(f"{flag} takes {kind} (got {_shown(text)})") from None
    return text
