"""Strategies by name, as the CLI and the server name them, and what ``budget`` means for each.

=========== ================================================================================
method      budget N
=========== ================================================================================
greedy      ignored: one sample
sc          N samples, majority vote (``sc-short``: length-aware vote)
sc-early    at most N samples, in rounds of ``round_size``; stops once the leader cannot lose
bon, wbon   N samples, each scored once finished
beam        N / M beams (M = ``expansions``), each expanded M ways per step
dvts        N / M independent subtrees, each expanded M ways per step
pf, epf     N particles, scored and resampled at every step
epf-lam     N particles, each sampling ``lookahead`` = k successors per step (about k times PF's tokens)
pgibbs      N particles per sweep, ``sweeps`` sweeps (about ``sweeps`` times PF's cost)
astar       stop after N complete solutions (or N x ``max_pops_per_sample`` pops)
mcts        N simulations, each expanding a leaf ``expansions`` ways
refine      N candidates in all, ``per_round`` per round
=========== ================================================================================

With ``steerable scale --budget-unit tokens`` a budget is instead a cap on the
tokens a run may generate, and N is that cap over the mean sample length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from steerable.config import from_mapping, parse_pairs
from steerable.errors import ConfigError
from steerable.search.astar import AStar
from steerable.search.base import Extract
from steerable.search.beam import BeamSearch
from steerable.search.best_of_n import BestOfN, Greedy, SelfConsistency, WeightedBestOfN
from steerable.search.mcts import MCTS
from steerable.search.particle_filter import ParticleFilter
from steerable.search.particle_gibbs import ParticleGibbs
from steerable.search.refine import IterativeRefine

METHODS: dict[str, Callable[[Extract], object]] = {
    "greedy": lambda ex: Greedy(extract=ex),
    "sc": lambda ex: SelfConsistency(extract=ex),
    "sc-early": lambda ex: SelfConsistency(extract=ex, early_stop=True),
    "sc-short": lambda ex: SelfConsistency(extract=ex, prefer_shorter=True, length_power=1.0),
    "bon": lambda ex: BestOfN(extract=ex),
    "wbon": lambda ex: WeightedBestOfN(extract=ex),
    "beam": lambda ex: BeamSearch(extract=ex),
    "dvts": lambda ex: BeamSearch(diverse=True, extract=ex),
    "pf": lambda ex: ParticleFilter(extract=ex),
    "epf": lambda ex: ParticleFilter(entropic=True, resampling="systematic", extract=ex),
    "epf-lam": lambda ex: ParticleFilter(entropic=True, resampling="systematic", lookahead=2, extract=ex),
    "pgibbs": lambda ex: ParticleGibbs(extract=ex),
    "astar": lambda ex: AStar(extract=ex),
    "mcts": lambda ex: MCTS(extract=ex),
    "refine": lambda ex: IterativeRefine(extract=ex),
}
#: methods that use no scorer
UNSCORED = {"greedy", "sc", "sc-early", "sc-short"}


def parse_method(spec: str) -> tuple[str, dict]:
    """``"pf:resampling=systematic:temperature=0.5"`` -> ``("pf", {"resampling": "systematic", "temperature": 0.5})``.

    How a command line names a method with options (``--methods pf:resampling=systematic,epf``); a value is
    read as JSON where it parses (numbers, true/false, null), else as a string.
    """
    name, *pairs = spec.split(":")
    return name, parse_pairs(pairs, f"method {spec!r}:", "options are name=value after the method, joined by ':'")


def make_strategy(name: str, extract: Extract, options: Mapping | None = None):
    """A strategy by name (or ``name:key=value:...``, see :func:`parse_method`); ``options`` (user values, JSON
    types) override its fields, each checked against its declared type and bounds (``{"temperature": 0.5}``)."""
    if ":" in name:
        name, spec_options = parse_method(name)
        options = {**spec_options, **(options or {})}
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}: use one of {', '.join(METHODS)}")
    strategy = METHODS[name](extract)
    if options is None:
        return strategy
    if not isinstance(options, Mapping):
        raise ConfigError(f"{name}: options must be an object of name: value (got {type(options).__name__})")
    # the method's preset (epf: entropic, systematic) with the user's values over it, all checked again
    preset = {f.name: getattr(strategy, f.name) for f in dataclasses.fields(strategy) if f.init and f.name != "extract"}
    configured = from_mapping(type(strategy), {**preset, **options}, name, exclude=frozenset({"extract"}))
    return dataclasses.replace(configured, extract=extract)


def make_scorer(name: str, device: str = "cpu", generator=None):
    """A scorer by name.

    ``builtin-prm``; ``oracle`` (the built-in exact checker); ``none``;
    ``prm:PATH`` (a causal LM PRM with the step-tag convention);
    ``orm:PATH`` (a sequence classifier); ``judge`` / ``genrm`` (the policy
    itself as an LLM judge, or as a generative RM voting over 4 critiques);
    or a directory holding a token-classification PRM like the built-in one.
    """
    from pathlib import Path

    from steerable.reward.prm import TokenClassifierPRM
    from steerable.tasks.builtin.verifier import OraclePRM

    if name in ("none", ""):
        return None
    if name == "oracle":
        return OraclePRM()
    if name == "builtin-prm":
        return TokenClassifierPRM.from_pretrained("builtin", device=device)
    if name in ("judge", "genrm"):
        if generator is None:
            raise ConfigError(f"scorer {name!r} needs a generator to judge with")
        from steerable.reward.judge import GenerativeRewardModel, LLMJudge

        return LLMJudge(generator) if name == "judge" else GenerativeRewardModel(generator)
    if name.startswith(("prm:", "orm:")):
        kind, path = name.split(":", 1)
        if not Path(path).exists():
            raise ConfigError(f"scorer path {path!r} does not exist: pass a local model directory")
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

        from steerable.lm.loading import resolve_device
        from steerable.reward.hf import CausalLMPRM, SequenceClassifierORM

        tok = AutoTokenizer.from_pretrained(path)
        if kind == "prm":
            return CausalLMPRM(AutoModelForCausalLM.from_pretrained(path).to(resolve_device(device)), tok)
        return SequenceClassifierORM(
            AutoModelForSequenceClassification.from_pretrained(path).to(resolve_device(device)), tok
        )
    if Path(name).exists():
        return TokenClassifierPRM.from_pretrained(name, device=device)
    raise ConfigError(
        f"unknown scorer {name!r}: use builtin-prm, oracle, none, judge, genrm, prm:PATH, orm:PATH or a PRM directory"
    )
