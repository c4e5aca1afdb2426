"""Strategies by name, as the CLI and the server name them."""

from __future__ import annotations

from collections.abc import Callable

from steerable.errors import ConfigError
from steerable.search.astar import AStar
from steerable.search.base import Extract
from steerable.search.beam import BeamSearch
from steerable.search.best_of_n import BestOfN, Greedy, SelfConsistency, WeightedBestOfN
from steerable.search.mcts import MCTS
from steerable.search.particle_filter import ParticleFilter
from steerable.search.refine import IterativeRefine

METHODS: dict[str, Callable[[Extract], object]] = {
    "greedy": lambda ex: Greedy(extract=ex),
    "sc": lambda ex: SelfConsistency(extract=ex),
    "sc-early": lambda ex: SelfConsistency(extract=ex, early_stop=True),
    "bon": lambda ex: BestOfN(extract=ex),
    "wbon": lambda ex: WeightedBestOfN(extract=ex),
    "beam": lambda ex: BeamSearch(extract=ex),
    "dvts": lambda ex: BeamSearch(diverse=True, extract=ex),
    "pf": lambda ex: ParticleFilter(extract=ex),
    "epf": lambda ex: ParticleFilter(entropic=True, resampling="systematic", extract=ex),
    "astar": lambda ex: AStar(extract=ex),
    "mcts": lambda ex: MCTS(extract=ex),
    "refine": lambda ex: IterativeRefine(extract=ex),
}
#: methods that use no scorer
UNSCORED = {"greedy", "sc", "sc-early"}


def make_strategy(name: str, extract: Extract):
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}: use one of {', '.join(METHODS)}")
    return METHODS[name](extract)


def make_scorer(name: str, device: str = "cpu"):
    """``builtin-prm``, ``oracle`` (the built-in exact checker), ``none``, or a PRM directory."""
    from steerable.reward.prm import OraclePRM, TokenClassifierPRM

    if name in ("none", ""):
        return None
    if name == "oracle":
        return OraclePRM()
    if name == "builtin-prm":
        return TokenClassifierPRM.from_pretrained("builtin", device=device)
    from pathlib import Path

    if Path(name).exists():
        return TokenClassifierPRM.from_pretrained(name, device=device)
    raise ConfigError(f"unknown scorer {name!r}: use builtin-prm, oracle, none or a PRM directory")
