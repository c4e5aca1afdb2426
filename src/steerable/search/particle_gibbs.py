"""Particle Gibbs: several particle-filter sweeps, each conditioned on a reference particle.

Puri et al. ("A Probabilistic Inference Approach to Inference-Time Scaling of
LLMs using Particle-Based Monte Carlo Methods", their particle Gibbs): the first
sweep is plain particle filtering. Every later sweep runs N - 1 free particles
plus the reference — the answer of the previous sweep — which is forced along
its own steps and always survives resampling at row 0 (conditional SMC), while
the free particles resample from the whole weighted set, reference included.
The answer is the best-scored particle of the last sweep. ``budget`` is N; the
total cost is about ``sweeps`` times a particle filter's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steerable.config import check, opt
from steerable.errors import ConfigError
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, logit, no_answer, require
from steerable.search.particle_filter import ParticleFilter
from steerable.search.process import C, Forces, Process
from steerable.search.resampling import normalise, resample
from steerable.search.result import Candidate, Result
from steerable.streams import derive_seed


@dataclass(frozen=True)
class ParticleGibbs:
    sweeps: int = opt(2, "Particle-filter sweeps; each costs about one particle filter.", ge=1, le=16)
    delimiter: str = opt("\n", "How the reference is cut into steps (the process's delimiter).")
    extract: Extract = no_answer
    name = "pgibbs"

    def __post_init__(self) -> None:
        check(self, "pgibbs: ")
        if not self.delimiter:
            raise ConfigError("pgibbs: delimiter must be a non-empty string (got '')")

    def run(self, process: Process, scorer: Scorer, budget: int, cond: C, seed: int | None = None) -> Result:
        require(budget, scorer, self.name, min_budget=2, unit_range=True)
        if self.sweeps > 1 and not isinstance(process, Forces):
            raise ConfigError(f"pgibbs forces a reference step: {type(process).__name__} cannot (use pf)")
        meter = Meter(process, scorer)
        first = ParticleFilter(extract=self.extract).run(process, scorer, budget, cond, seed, new_run=False)
        ref_text, ref_score = first.text, max(c.score for c in first.candidates)
        texts, scores = [c.text for c in first.candidates], [c.score for c in first.candidates]
        g = torch.Generator().manual_seed(derive_seed(seed or 0, "pgibbs-resampling"))
        for sweep in range(1, self.sweeps):
            steps = [s + self.delimiter for s in ref_text.split(self.delimiter)]
            steps[-1] = steps[-1][: -len(self.delimiter)]
            state = process.init(cond, budget, None if seed is None else derive_seed(seed, "pgibbs-sweep", sweep))
            cur = [0.5] * budget
            t = 0
            while not all(process.is_terminal(state)):
                was = process.is_terminal(state)
                process.propose(state, skip=[0])
                if t < len(steps) and not was[0]:
                    process.force(state, 0, steps[t], final=t == len(steps) - 1)
                t += 1
                prev = process.preview(state)
                live = [i for i in range(budget) if not was[i]]
                for i, s in zip(live, checked_scores(scorer, [cond] * len(live), [prev[i] for i in live]), strict=True):
                    cur[i] = s
                if all(process.is_terminal(state)):
                    break
                w = normalise(torch.tensor([logit(s) for s in cur], dtype=torch.float64))
                idx = [0] + resample("multinomial", w, budget - 1, g)
                state = process.select(state, idx)
                cur = [cur[i] for i in idx]
            texts, scores = process.preview(state), cur
            best = max(range(budget), key=lambda i: scores[i])
            ref_text, ref_score = texts[best], scores[best]
        best = max(range(len(texts)), key=lambda i: scores[i])
        cands = tuple(
            Candidate(x, self.extract(x), s, float(i == best))
            for i, (x, s) in enumerate(zip(texts, scores, strict=True))
        )
        return Result(
            self.name,
            budget,
            texts[best],
            cands[best].answer,
            cands,
            meter.cost(),
            {"sweeps": self.sweeps, "reference_score": ref_score},
        )
