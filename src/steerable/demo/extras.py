"""Whether an optional extra is installed, as the one line a demo section prints in its place."""

from __future__ import annotations

import importlib


def missing_extra(extra: str, modules: tuple[str, ...], section: str) -> str | None:
    """None when ``modules`` import; else a line naming the extra to install (``section`` says what is skipped)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            return (
                f"{section} needs the [{extra}] extra ({e.name or name} is missing): "
                f"pip install 'steerable[{extra}]'; skipping it"
            )
    return None
