"""What made an artifact: the command that remakes it, its settings and the machine, one record head for all.

Every trainer writes a JSON record beside what it trained (``training.json``,
``prm.json``, ``gorl.json``, ``run.json``) and starts it with
:func:`provenance`. The command is rebuilt from the config's fields, not read
from ``sys.argv``, so it is the same whether the run came from the command
line or from Python, and it names every field in effect (not only the ones
typed), so it remakes the run even after a default changes.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shlex
from collections.abc import Collection
from importlib import metadata
from typing import Any

import torch

from steerable.config import flag_name


def provenance(cfg: Any, name: str, unused: Collection[str] = ()) -> dict[str, Any]:
    """``{"command", "config", "steerable", "python", "torch", "machine", "threads"}`` for the config ``cfg``.

    ``name`` is the command that takes ``cfg``'s fields as flags
    (``"control train-policy"``); ``unused`` names fields not in effect
    (``minutes`` under ``steps``), left off the command (``config`` keeps them).
    """
    try:
        version = metadata.version("steerable")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = None
    return {
        "command": command_line(cfg, name, unused),
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),  # paths as strings
        "steerable": version,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
    }


def command_line(cfg: Any, name: str, unused: Collection[str] = ()) -> str:
    """``steerable NAME --flag value ...``: every command-line field of ``cfg`` that holds a value, as typed.

    A field kept off the command line (``cli=False``), read from the
    environment (an API key: never written down) or None (the flag's absence)
    is left out, as are the ``unused`` ones.
    """
    words = ["steerable", *name.split()]
    for f in dataclasses.fields(cfg):
        meta = f.metadata
        if not f.init or not meta.get("cli", bool(meta)) or meta.get("envvar") or f.name in unused:
            continue
        words += _flag_words(f, getattr(cfg, f.name))
    return " ".join(shlex.quote(w) for w in words)


def _flag_words(f: dataclasses.Field, value: Any) -> list[str]:
    """The words that set field ``f`` to ``value``, as :mod:`steerable.cli.flags` reads them."""
    flag = flag_name(f)
    if value is None:
        return []
    if isinstance(value, bool):
        if f.metadata.get("flag"):  # a switch spelled by hand (--json) has no --no- form
            return [flag] if value else []
        return [flag if value else "--no-" + f.name.replace("_", "-")]
    if isinstance(value, dict):
        return [w for k, v in value.items() for w in (flag, f"{k}={_pair_value(v)}")]
    if isinstance(value, tuple | list):
        sep = f.metadata.get("sep", ",")
        return [flag, sep.join(str(x) for x in value)] if sep else [w for x in value for w in (flag, str(x))]
    return [flag, str(value)]


def _pair_value(value: Any) -> str:
    """A ``NAME=VALUE`` value that :func:`~steerable.config.parse_pairs` reads back as ``value``."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError:
            if value == value.strip():
                return value  # a word: written as typed
    return json.dumps(value)
