"""Diffusion strategies by name, as ``steerable diffuse`` names them (the extractor is passed in, as in search).

A name fixes a strategy and whether its process is guided by the reward's
gradient: ``dps`` is best-of-N over guided samples (N = 1 is plain DPS-style
guidance), ``fk-dps`` is FK steering with the guided proposal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from steerable.config import from_mapping
from steerable.diffusion.dts import DiffusionTreeSampling
from steerable.diffusion.fk import FKSteering
from steerable.errors import ConfigError
from steerable.search.base import Extract
from steerable.search.best_of_n import BestOfN


@dataclass(frozen=True)
class Method:
    make: Callable[[Extract], object]
    guided: bool = False  # the process runs with reward-gradient guidance
    sampler: bool = False  # the answer is a sample of the tilted target (not the best found)


METHODS: dict[str, Method] = {
    "bon": Method(lambda ex: BestOfN(extract=ex)),
    "fk": Method(lambda ex: FKSteering(extract=ex)),
    "fk-max": Method(lambda ex: FKSteering(potential="max", extract=ex)),
    "fk-sum": Method(lambda ex: FKSteering(potential="sum", extract=ex)),
    "fk-sample": Method(lambda ex: FKSteering(final="sample", extract=ex), sampler=True),
    "dts": Method(lambda ex: DiffusionTreeSampling(extract=ex), sampler=True),
    "dts-star": Method(lambda ex: DiffusionTreeSampling(greedy=True, extract=ex)),
    "dps": Method(lambda ex: BestOfN(extract=ex), guided=True),
    "fk-dps": Method(lambda ex: FKSteering(extract=ex), guided=True),
}


def method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown diffusion method {name!r}: use one of {', '.join(METHODS)}")
    return METHODS[name]


def make_strategy(name: str, extract: Extract, options: Mapping | None = None):
    """A strategy by name; ``options`` (user values) override its fields, checked against their types and bounds."""
    strategy = method(name).make(extract)
    if not options:
        return strategy
    if not dataclasses.is_dataclass(strategy):
        raise ConfigError(f"{name} takes no options")
    preset = {f.name: getattr(strategy, f.name) for f in dataclasses.fields(strategy) if f.init and f.name != "extract"}
    configured = from_mapping(type(strategy), {**preset, **options}, name, exclude=frozenset({"extract"}))
    return dataclasses.replace(configured, extract=extract)
