"""Configuration dataclasses whose fields carry their help text and bounds, checked field by field.

A method's configuration is a dataclass; every field is declared with
:func:`opt` (default, help and, for numbers, bounds). :func:`check` validates
an instance against its annotations and bounds, :func:`from_mapping` builds
one from user-supplied values (a request's JSON, ``--set NAME=VALUE`` pairs
read by :func:`parse_pairs`). The command line is made from the same fields
by :mod:`steerable.cli.flags`, so a flag, a request field and a Python
argument never disagree (the habit of TRL's configs). Every error is one
:class:`~steerable.errors.ConfigError` line naming the field.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sized
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
    min_len: int | None = None,
    min_items: int | None = None,
    flag: str | None = None,
    envvar: str | None = None,
    sep: str | None = ",",
    factory: Callable[[], Any] | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with a default (``...`` for required), its help text and, for numbers, bounds.

    ``ge``/``gt``/``le``/``lt`` bound a number (or each number of a tuple);
    ``finite`` (the default) refuses NaN and infinities for floats;
    ``min_len`` is the fewest characters of a string (or of each string of a
    tuple) and ``min_items`` the fewest items of a tuple.
    For the command line (:mod:`steerable.cli.flags`): ``flag`` spells the flag when it
    is not ``--field-name``, ``envvar`` reads it from the environment, ``sep``
    splits a tuple's one flag value (``--budgets 1,4,16``; ``None``: repeat the
    flag instead), ``factory`` makes a mutable default (a dict of ``--set
    NAME=VALUE``), and ``cli=False`` keeps a field off the command line.
    """
    meta = {
        "help": help,
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "finite": finite,
        "min_len": min_len,
        "min_items": min_items,
        "flag": flag,
        "envvar": envvar,
        "sep": sep,
        "cli": cli,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
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


def _check_len(name: str, value: Sized, least: int | None, unit: str) -> None:
    if least is not None and len(value) < least:
        what = "empty" if len(value) == 0 else f"{len(value)} {unit} long"
        unit = unit if least != 1 else unit[:-1]
        raise ConfigError(f"{name} must have at least {least} {unit} (got {what})")


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
        _check_len(name, value, meta.get("min_items"), "items")
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
            _check_len(name, value, meta.get("min_len"), "characters")
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


def distinct(obj: Any, *names: str) -> None:
    """A one-line :class:`ConfigError` when a list field of ``obj`` (``--methods``, ``--budgets``) names a value
    twice: a run would measure it twice under one label."""
    for name in names:
        values = getattr(obj, name)
        twice = sorted({v for v in values if values.count(v) > 1}, key=str)
        if twice:
            raise ConfigError(f"--{name.replace('_', '-')} lists {twice[0]} twice: give each value once")


def from_mapping(cls: type, values: Mapping[str, Any], what: str = "", exclude: frozenset[str] = frozenset()) -> Any:
    """An instance of the dataclass ``cls`` from user-supplied ``values`` (JSON types), checked field by field.

    Unknown names are an error listing the known ones; ``exclude`` hides
    fields a user may not set (e.g. a strategy's answer extractor).
    """
    return cls(**checked_values(cls, values, what, exclude))


def checked_values(
    cls: type, values: Mapping[str, Any], what: str = "", exclude: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """``values`` checked against the fields of the dataclass ``cls`` as :func:`from_mapping` checks them, for a
    caller that passes more (a model, a policy) when it builds the instance."""
    prefix = f"{what}: " if what else ""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix}options must be an object of name: value (got {_shown(values)})")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in exclude}
    bad = sorted(str(k) for k in values if k not in fields)
    if bad:
        raise ConfigError(f"{prefix}no option {', '.join(bad)}: use {', '.join(sorted(fields)) or 'none'}")
    hints = _hints(cls)
    return {k: _coerce(f"{prefix}{k}", v, hints[k], fields[k].metadata) for k, v in values.items()}


def flag_name(f: dataclasses.Field) -> str:
    """The command-line flag of field ``f``: its :func:`opt` ``flag``, else ``--field-name``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def parse_pairs(items: Iterable[str], what: str = "--set", fix: str = "write NAME=VALUE") -> dict[str, Any]:
    """``["lam=5", "potential=max"]`` -> ``{"lam": 5, "potential": "max"}``: user-typed ``NAME=VALUE`` pairs.

    One rule for every such value: JSON where it parses (numbers,
    ``true``/``false``, ``null``, lists), else the string as typed; the
    field it names checks it (:func:`from_mapping`). A pair without ``=`` or a
    name is a ConfigError: ``"{what} {pair!r}: {fix}"``.
    """
    out: dict[str, Any] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise ConfigError(f"{what} {item!r}: {fix}")
        try:
            out[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[name.strip()] = value.strip()  # a word such as max or systematic
    return out


# ---- backslash escapes in text a user types ---------------------------------------------------------

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[ntr0abfv\\'\"])")


def unescape(text: str, what: str = "text") -> str:
    """``text`` with ``\\n``, ``\\t``, ``\\\\``, ``\\xHH``, ``\\uXXXX`` ... decoded; every other character kept as is.

    Unlike ``codecs.decode(text, "unicode_escape")`` it leaves non-ASCII text
    alone (``café\\n`` stays ``café`` plus a newline) and never fails: a
    backslash that starts no escape (a trailing ``\\``, ``\\x`` without two
    hex digits, ``\\d``) is kept literally. A lone surrogate (``\\ud800``) is
    a :class:`ConfigError` naming ``what``: no tokenizer or file can hold one.
    """

    def one(m: re.Match) -> str:
        s = m.group(1)
        if s[0] in "xuU":
            return chr(int(s[1:], 16)) if int(s[1:], 16) <= 0x10FFFF else m.group(0)
        return _ESCAPES.get(s, s)

    out = _ESCAPE.sub(one, text) if "\\" in text else text
    check_text(out, what)
    return out


def check_text(text: str, what: str = "text") -> str:
    """``text`` if it is valid Unicode; a lone surrogate (from ``\\ud800`` in JSON or an escape) is a ConfigError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ConfigError(
            f"{what} holds a lone surrogate (U+{ord(text[e.start]):04X} at character {e.start}): use real characters"
        ) from None
    return text
