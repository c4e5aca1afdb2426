"""Configuration dataclasses whose fields carry their help text and bounds, and CLI commands made from them.

A method's configuration is a dataclass; every field is declared with
:func:`opt` (default, help and, for numbers, bounds). :func:`check` validates
an instance against its annotations and bounds, :func:`from_mapping` builds
one from user-supplied values (a request's JSON, ``--set NAME=VALUE``), and
:func:`config_command` turns such a class into a typer command whose flags
are exactly its fields, so a flag, a request field and a Python argument never
disagree (the habit of TRL's configs). Every error is one
:class:`~steerable.errors.ConfigError` line naming the field.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from steerable.errors import ConfigError


def opt(
    default: Any,
    help: str,  # noqa: A002 - the word typer and argparse use
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    finite: bool = True,
) -> Any:
    """A dataclass field with a default (``...`` for required), its help text and, for numbers, bounds.

    ``ge``/``gt``/``le``/``lt`` bound a number (or each number of a tuple);
    ``finite`` (the default) refuses NaN and infinities for floats.
    """
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "finite": finite}
    if default is ...:
        return dataclasses.field(metadata=meta)
    if isinstance(default, list | dict | set):
        raise TypeError("opt: use a tuple (immutable) default, not a list, dict or set")
    return dataclasses.field(default=default, metadata=meta)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _bounds_text(meta: Mapping[str, Any]) -> str:
    parts = [
        f"{sym} {meta[k]}"
        for k, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if meta.get(k) is not None
    ]
    return " and ".join(parts)


def _check_number(name: str, value: float, meta: Mapping[str, Any]) -> None:
    if isinstance(value, float) and meta.get("finite", True) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number (got {value})")
    ge, gt, le, lt = (meta.get(k) for k in ("ge", "gt", "le", "lt"))
    if (
        (ge is not None and not value >= ge)
        or (gt is not None and not value > gt)
        or (le is not None and not value <= le)
        or (lt is not None and not value < lt)
    ):
        shown = _shown(value)
        raise ConfigError(f"{name} must be {_bounds_text(meta)} (got {shown})")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(name: str, value: Any, tp: Any, meta: Mapping[str, Any]) -> Any:
    """``value`` as type ``tp`` (JSON-like: ints stand for floats, lists for tuples), checked; else ConfigError."""
    origin = typing.get_origin(tp)
    if tp is Any or (origin is None and callable(tp) and tp not in (int, float, str, bool, type(None))):
        return value  # callables and free-form fields are the code's business, not a user's
    if origin in (types.UnionType, typing.Union):
        for arm in typing.get_args(tp):
            try:
                return _coerce(name, value, arm, meta)
            except ConfigError as e:
                last = e
                if _matches_shape(value, arm):  # the right kind of value with a bad content: report that
                    raise
        raise ConfigError(f"{name} must be {_type_name(tp)} (got {_shown(value)})") from last
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
        raise ConfigError(f"{name} must be {_type_name(tp)} (got {_shown(value)})")
    if origin is tuple:
        if not isinstance(value, tuple | list):
            raise ConfigError(f"{name} must be a list (got {_shown(value)})")
        args = typing.get_args(tp)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if item is None and len(args) != len(value):
            raise ConfigError(f"{name} must have {len(args)} items (got {len(value)})")
        return tuple(_coerce(f"{name}[{i}]", v, item or args[i], meta) for i, v in enumerate(value))
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{name} must be null (got {_shown(value)})")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false (got {_shown(value)})")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            _check_number(name, value, meta)
            return value
        raise ConfigError(f"{name} must be an integer (got {_shown(value)})")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, int):
                try:
                    value = float(value)
                except OverflowError:
                    raise ConfigError(
                        f"{name} is too large (got an integer of {len(str(abs(value)))} digits)"
                    ) from None
            _check_number(name, value, meta)
            return value
        raise ConfigError(f"{name} must be a number (got {_shown(value)})")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name} must be a string (got {_shown(value)})")
    return value


def _matches_shape(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return isinstance(value, tuple | list)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return tp in (str, bool) and isinstance(value, tp)


def _shown(value: Any) -> str:
    """A short repr for messages; huge integers (which ``repr`` may refuse past 4,300 digits) by their size."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check(obj: Any, where: str = "") -> None:
    """Check every field of the dataclass ``obj`` against its annotation and :func:`opt` bounds.

    Call it from ``__post_init__``; ``where`` prefixes the field name in the
    message (``"pf: temperature must be > 0 (got -1.0)"``).
    """
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        _coerce(f"{where}{f.name}", getattr(obj, f.name), hints[f.name], f.metadata)


def from_mapping(cls: type, values: Mapping[str, Any], what: str = "", exclude: frozenset[str] = frozenset()) -> Any:
    """An instance of the dataclass ``cls`` from user-supplied ``values`` (JSON types), checked field by field.

    Unknown names are an error listing the known ones; ``exclude`` hides
    fields a user may not set (e.g. a strategy's answer extractor).
    """
    prefix = f"{what}: " if what else ""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix}options must be an object of name: value (got {_shown(values)})")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in exclude}
    bad = sorted(str(k) for k in values if k not in fields)
    if bad:
        raise ConfigError(f"{prefix}no option {', '.join(bad)}: use {', '.join(sorted(fields)) or 'none'}")
    hints = _hints(cls)
    kwargs = {k: _coerce(f"{prefix}{k}", v, hints[k], fields[k].metadata) for k, v in values.items()}
    return cls(**kwargs)


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

    hints = _hints(cls)
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
