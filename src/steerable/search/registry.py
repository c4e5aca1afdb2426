"""Strategies by name, as the CLI and the server name them, and what ``budget`` means for each.

:data:`METHODS` is the table (a :class:`~steerable.registry.Registry`): each
name builds a strategy dataclass with its preset, and every field but the
answer extractor is an option a user may set (``--methods
pf:resampling=systematic``, a request's ``options``). ``budget_help()`` and
the documentation print what the budget N counts for each method.

With ``steerable scale --budget-unit tokens`` a budget is instead a cap on the
tokens a run may generate, and N is that cap over the mean sample length.
"""

from __future__ import annotations

from collections.abc import Mapping

from steerable.config import parse_pairs
from steerable.errors import ConfigError
from steerable.registry import Entry, Registry
from steerable.search.astar import AStar
from steerable.search.base import Extract
from steerable.search.beam import BeamSearch
from steerable.search.best_of_n import BestOfN, Greedy, SelfConsistency, WeightedBestOfN
from steerable.search.mcts import MCTS
from steerable.search.particle_filter import ParticleFilter
from steerable.search.particle_gibbs import ParticleGibbs
from steerable.search.refine import IterativeRefine

_SAMPLE = "N samples, each scored once finished"
_UNSCORED = {"scored": False}
_EPF = {"entropic": True, "resampling": "systematic"}
METHODS = Registry(
    "method",
    {
        "greedy": Entry(Greedy, "ignored: one sample", "one sample at the process's settings", extra=_UNSCORED),
        "sc": Entry(SelfConsistency, "N samples", "majority vote", extra=_UNSCORED),
        "sc-early": Entry(
            SelfConsistency, "at most N samples, in rounds of round_size", "majority vote, stops once the leader "
            "cannot lose", {"early_stop": True}, extra=_UNSCORED,
        ),
        "sc-short": Entry(
            SelfConsistency, "N samples", "length-aware vote (ties to shorter, votes by 1/length)",
            {"prefer_shorter": True, "length_power": 1.0}, extra=_UNSCORED,
        ),
        "bon": Entry(BestOfN, _SAMPLE, "the best-scored sample"),
        "wbon": Entry(WeightedBestOfN, _SAMPLE, "scores summed per distinct answer"),
        "beam": Entry(BeamSearch, "N / M beams (M = expansions), each expanded M ways per step", "step-level beam"),
        "dvts": Entry(
            BeamSearch, "N / M independent subtrees, each expanded M ways per step", "diverse verifier tree search",
            {"diverse": True},
        ),
        "pf": Entry(ParticleFilter, "N particles, scored and resampled at every step", "particle filtering"),
        "epf": Entry(ParticleFilter, "N particles, scored and resampled at every step", "entropic PF", _EPF),
        "epf-lam": Entry(
            ParticleFilter, "N particles, each sampling lookahead = k successors per step (about k times PF's "
            "tokens)", "entropic PF with look-ahead modulation", {**_EPF, "lookahead": 2},
        ),
        "pgibbs": Entry(ParticleGibbs, "N particles per sweep, sweeps sweeps", "particle Gibbs"),
        "astar": Entry(AStar, "stop after N complete solutions (or N x max_pops_per_sample pops)", "A*-decoding"),
        "mcts": Entry(MCTS, "N simulations, each expanding a leaf expansions ways", "UCT over steps"),
        "refine": Entry(IterativeRefine, "N candidates in all, per_round per round", "iterative refinement (IAD)"),
    },
)  # fmt: skip
#: methods that use no scorer
UNSCORED = {n for n, e in METHODS.entries.items() if not e.extra.get("scored", True)}


def parse_method(spec: str) -> tuple[str, dict]:
    """``"pf:resampling=systematic:temperature=0.5"`` -> ``("pf", {"resampling": "systematic", "temperature": 0.5})``.

    How a command line names a method with options (``--methods pf:resampling=systematic,epf``); a value is
    read as JSON where it parses (numbers, true/false, null), else as a string.
    """
    name, *pairs = spec.split(":")
    return name, parse_pairs(pairs, f"method {spec!r}:", "options are name=value after the method, joined by ':'")


def make_strategy(name: str, extract: Extract, options: Mapping | None = None):
    """A strategy by name (or ``name:key=value:...``, see :func:`parse_method`); ``options`` (user values, JSON
    types) override its preset's fields, each checked against its declared type and bounds (``{"temperature":
    0.5}``)."""
    if ":" in name:
        name, spec_options = parse_method(name)
        options = {**spec_options, **(options or {})}
    return METHODS.build(name, options, extract=extract)


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
