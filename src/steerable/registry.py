"""Things by name: search strategies, diffusion methods and control methods, as the CLI and the server name them.

Each family keeps one :class:`Registry`, a table of :class:`Entry` rows. An
entry names a dataclass (a strategy, a controller) whose fields are the
options a user may set (``--set NAME=VALUE``, ``--methods pf:temperature=0.5``,
a request's ``options``), the preset its name fixes (``epf`` is a particle
filter with ``entropic=True``), and what the budget counts for it (N samples,
N particles, K chunks, K' denoising steps, ...): the table a command's help
and the documentation print. Every user value is checked against its field's
type and bounds (:func:`steerable.config.checked_values`); an unknown name or
option is one line listing the known ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from steerable.config import checked_values
from steerable.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    """One name of a registry."""

    cls: type  # the dataclass it builds; its init fields are the options
    budget: str  # what the budget counts for it (one phrase, for tables and --help)
    summary: str = ""  # what it does, in a few words
    preset: Mapping[str, Any] = field(default_factory=dict)  # fields the name fixes (the user may override them)
    hidden: frozenset[str] = frozenset()  # fields a user may not set (objects the family passes itself)
    extra: Mapping[str, Any] = field(default_factory=dict)  # what the family reads besides (guided, artifacts, ...)


@dataclass(frozen=True)
class Registry:
    """A family's names (``kind`` says which family in errors: "method", "diffusion method", "control method")."""

    kind: str
    entries: Mapping[str, Entry]

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def entry(self, name: str) -> Entry:
        if name not in self.entries:
            raise ConfigError(f"unknown {self.kind} {name!r}: use one of {', '.join(self.entries)}")
        return self.entries[name]

    def settable(self, name: str, passed: frozenset[str] = frozenset()) -> list[str]:
        """The options of ``name``: its class's init fields, less those the family passes (``passed``) or hides."""
        e = self.entry(name)
        return [f.name for f in dataclasses.fields(e.cls) if f.init and f.name not in passed | e.hidden]

    def options(self, name: str, values: Mapping[str, Any] | None, passed: frozenset[str] = frozenset()) -> dict:
        """The preset of ``name`` with the user's ``values`` over it, each checked against its field."""
        e = self.entry(name)
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"{name}: options must be an object of name: value (got {type(values).__name__})")
        hide = frozenset(f.name for f in dataclasses.fields(e.cls)) - set(self.settable(name, passed))
        return checked_values(e.cls, {**e.preset, **(values or {})}, name, exclude=hide)

    def build(self, name: str, values: Mapping[str, Any] | None = None, **passed: Any) -> Any:
        """An instance of ``name``'s class: the family's own arguments ``passed`` (an answer extractor, a policy)
        plus the checked preset and options."""
        return self.entry(name).cls(**passed, **self.options(name, values, frozenset(passed)))

    def table(self) -> list[tuple[str, str, str]]:
        """(name, what the budget counts, what it does) for every name, in the registry's order."""
        return [(n, e.budget, e.summary) for n, e in self.entries.items()]

    def budget_help(self) -> str:
        """One line per name, what its budget counts, as a block click prints unwrapped (a command's --help)."""
        width = max(map(len, self.entries))
        return "\b\n" + "\n".join(f"{n:<{width}}  {b}" for n, b, _ in self.table())
