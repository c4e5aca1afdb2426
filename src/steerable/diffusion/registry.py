"""Diffusion strategies by name, as ``steerable diffuse`` and the images route name them (the extractor is passed
in, as in search).

:data:`METHODS` is the table (a :class:`~steerable.registry.Registry`). A name
fixes a strategy, its preset and whether its process is guided by the reward's
gradient: ``dps`` is best-of-N over guided samples (N = 1 is plain DPS-style
guidance), ``fk-dps`` is FK steering with the guided proposal. A budget N is in
samples: a run spends at most N x ``num_steps`` denoiser evaluations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from steerable.diffusion.dts import DiffusionTreeSampling
from steerable.diffusion.fk import FKSteering
from steerable.registry import Entry, Registry
from steerable.search.base import Extract
from steerable.search.best_of_n import BestOfN


@dataclass(frozen=True)
class Method:
    """What a name says about its process and answer, beside its strategy."""

    guided: bool = False  # the process runs with reward-gradient guidance
    sampler: bool = False  # the answer is a sample of the tilted target (not the best found)


_N = "N samples of num_steps steps (N x steps NFE)"
_K = "N particles, resampled on FK's schedule (N x steps NFE)"
_TREE = "rollouts within N x steps NFE, sharing their prefixes"
METHODS = Registry(
    "diffusion method",
    {
        "bon": Entry(BestOfN, _N, "best of N by reward"),
        "fk": Entry(FKSteering, _K, "FK steering, diff potential, best final particle"),
        "fk-max": Entry(FKSteering, _K, "FK steering, max potential", {"potential": "max"}),
        "fk-sum": Entry(FKSteering, _K, "FK steering, sum potential", {"potential": "sum"}),
        "fk-sample": Entry(FKSteering, _K, "FK steering, answer drawn by weight", {"final": "sample"},
                           extra={"sampler": True}),
        "dts": Entry(DiffusionTreeSampling, _TREE, "diffusion tree sampling (Boltzmann walk)", extra={"sampler": True}),
        "dts-star": Entry(DiffusionTreeSampling, _TREE, "diffusion tree search (best x0)", {"greedy": True}),
        "dps": Entry(BestOfN, _N, "best of N reward-guided samples", extra={"guided": True}),
        "fk-dps": Entry(FKSteering, _K, "FK steering with the guided proposal", extra={"guided": True}),
    },
)  # fmt: skip


def method(name: str) -> Method:
    """What ``name`` says about its process and answer (an unknown name is a one-line error)."""
    return Method(**METHODS.entry(name).extra)


def make_strategy(name: str, extract: Extract, options: Mapping | None = None):
    """A strategy by name; ``options`` (user values) override its fields, checked against their types and bounds."""
    return METHODS.build(name, options, extract=extract)
