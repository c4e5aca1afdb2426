"""Particle filtering over reasoning steps, and its entropic variant (ePF).

Puri et al., "A Probabilistic Inference Approach to Inference-Time Scaling of
LLMs using Particle-Based Monte Carlo Methods": every particle's partial
solution is scored by a PRM, r in (0, 1); its log-weight is logit(r) of the
current prefix (not accumulated over steps); w = softmax(logit(r) / T);
particles are resampled at every step and finished particles stay in the pool
with their final score. The answer is the particle with the highest final
score (or one sampled by weight).

Resampling draws N ancestors from w by ``resampling``: ``multinomial`` (Puri
et al.'s, the default for ``pf``), ``systematic`` or ``stratified`` (lower
variance; ``epf`` defaults to systematic, as the ePF authors' code does). With
``ess_threshold`` > 0 a step resamples only when ESS/N < ``ess_threshold``
(adaptive resampling; 0, the default, resamples at every step as the paper).

Entropic annealing ("Mitigating Premature Exploitation in Particle-based Monte
Carlo for Inference-Time Scaling", ePF): with p = softmax(logit r) and
ESS = 1 / sum(p^2), when ESS/N < ``anneal_threshold`` and t / t_max <
``anneal_until``, the resampling temperature becomes
T = max(T0, (N / ESS)(1 - t / t_max)), which flattens the resampling
distribution while diversity is low. t counts steps taken (1 at the first
resampling). t_max is the run's step cap: the process's ``max_steps``, as in the
authors' code (its_hub's ``EntropicParticleFiltering``: ``progress =
current_step / sg.max_steps``), unless ``t_max`` is given. ``Result.info``
counts the resampling steps and the steps where annealing raised T
(``counts``), with every step's ESS and temperature.

Look-ahead modulation (LaM) is described in that paper only as judging "a
state's potential based on its successors"; no formula is public. Ours: before
resampling, every live particle i draws ``lookahead`` = k next steps (one batch)
scored r_i1..r_ik, and its potential is

    phi_i = logit(r_i) + beta * (mean_j logit(r_ij) - logit(r_i))

Resampling uses softmax(phi / T); the c-th surviving copy of particle i goes on
from its successor c mod k, so look-ahead tokens become the next step instead
of being thrown away. beta = 0 is plain PF on one-step-older scores;
``benchmarks`` ablates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from steerable.config import check, opt
from steerable.errors import ConfigError
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, logit, no_answer, require
from steerable.search.process import C, Process, StepCapped
from steerable.search.resampling import Scheme, ess, normalise, resample
from steerable.search.result import Candidate, Result


@dataclass(frozen=True)
class ParticleFilter:
    temperature: float = opt(1.0, "T0 in softmax(logit(r) / T0).", gt=0.0, le=1000.0)
    resampling: Scheme = opt("multinomial", "Puri et al.'s multinomial, or systematic or stratified (lower variance).")
    ess_threshold: float = opt(
        0.0, "Resample only when ESS/N falls below this (0: the paper's every step, as 1.0).", ge=0.0, le=1.0
    )
    final: Literal["argmax", "sample"] = opt("argmax", "The answer: the best final score, or one sampled by weight.")
    entropic: bool = opt(False, "ePF's entropic annealing.")
    anneal_threshold: float = opt(0.5, "ePF: anneal when ESS/N is below this ...", ge=0.0, le=1.0)
    anneal_until: float = opt(0.5, "... and t / t_max is below this.", ge=0.0, le=1.0)
    t_max: int | None = opt(
        None, "ePF: T in (1 - t/T); default (null): the process's step cap, as the authors' code.", ge=1, le=10_000
    )
    lookahead: int = opt(
        0, "Look-ahead modulation: successors sampled per particle before resampling (0: off).", ge=0, le=16
    )
    lookahead_weight: float = opt(
        0.5, "beta: how far the potential moves from logit(r) toward the successors' mean.", ge=0.0, le=1.0
    )
    extract: Extract = no_answer

    def __post_init__(self) -> None:
        check(self, f"{self.name}: ")

    @property
    def name(self) -> str:
        return ("epf" if self.entropic else "pf") + ("-lam" if self.lookahead else "")

    def run(
        self, process: Process, scorer: Scorer, budget: int, cond: C, seed: int | None = None, *, new_run=True
    ) -> Result:
        """``new_run=False`` when called inside another strategy's run (shares its token budget)."""
        require(budget, scorer, self.name, unit_range=True)
        t_max = self.t_max
        if self.entropic and t_max is None:
            if not isinstance(process, StepCapped):
                raise ConfigError(f"{self.name}: {type(process).__name__} has no step cap: give t_max")
            t_max = process.max_steps
        meter = Meter(process, scorer, new_run)
        g = torch.Generator().manual_seed(0 if seed is None else seed)
        state = process.init(cond, budget, seed)
        scores = [0.5] * budget
        t, temps, ess_log, resampled, annealed = 0, [], [], 0, 0
        while True:
            if not self.lookahead or t == 0:
                was_terminal = process.is_terminal(state)
                process.propose(state)
                texts = process.preview(state)
                live = [i for i in range(budget) if not was_terminal[i]]
                # resampling may keep only finished particles: a scorer is never asked to score nothing
                new = checked_scores(scorer, [cond] * len(live), [texts[i] for i in live]) if live else []
                for i, s in zip(live, new, strict=True):
                    scores[i] = s  # finished particles keep their final score
                t += 1
            if all(process.is_terminal(state)):
                break
            potentials = [logit(s) for s in scores]
            if self.lookahead:
                succ, succ_scores, rows_of = self._look_ahead(process, scorer, state, cond, scores)
                for i, rows in enumerate(rows_of):
                    if len(rows) > 1:
                        mean = sum(logit(succ_scores[r]) for r in rows) / len(rows)
                        potentials[i] += self.lookahead_weight * (mean - potentials[i])
            logits = torch.tensor(potentials, dtype=torch.float64)
            n_eff = ess(normalise(logits))
            ess_log.append(round(n_eff, 3))
            temp = self.temperature
            if self.entropic and n_eff / budget < self.anneal_threshold and t / t_max < self.anneal_until:
                temp = max(temp, (budget / n_eff) * (1 - t / t_max))
            temps.append(round(temp, 3))
            if self.ess_threshold and n_eff / budget >= self.ess_threshold and not self.lookahead:
                continue
            resampled += 1
            annealed += temp > self.temperature
            idx = resample(self.resampling, normalise(logits / temp), budget, g)
            if self.lookahead:
                copies: dict[int, int] = {}
                rows = []
                for i in idx:
                    rows.append(rows_of[i][copies.get(i, 0) % len(rows_of[i])])
                    copies[i] = copies.get(i, 0) + 1
                state = process.select(succ, rows)
                scores = [succ_scores[r] for r in rows]
                t += 1
            else:
                state = process.select(state, idx)
                scores = [scores[i] for i in idx]
        texts = process.preview(state)
        logits = torch.tensor([logit(s) for s in scores], dtype=torch.float64)
        w = torch.softmax(logits, 0)
        if self.final == "argmax":
            pick = int(torch.argmax(logits))
        else:
            pick = int(torch.multinomial(w.float(), 1, generator=g))
        cands = tuple(
            Candidate(x, self.extract(x), s, float(wi)) for x, s, wi in zip(texts, scores, w.tolist(), strict=True)
        )
        info = {
            "steps": t,
            "ess": ess_log,
            "temperatures": temps,
            "t_max": t_max,
            "counts": {"resampling_steps": resampled, "annealed_steps": annealed},
        }
        return Result(self.name, budget, texts[pick], cands[pick].answer, cands, meter.cost(), info)

    def _look_ahead(self, process: Process, scorer: Scorer, state, cond: C, scores: list[float]):
        """Successors of every particle in one batch: (batch, their scores, rows of each particle).

        A finished particle is its own single successor, with its final score.
        """
        term = process.is_terminal(state)
        rows_of, order = [], []
        for i in range(process.size(state)):
            start = len(order)
            order += [i] * (1 if term[i] else self.lookahead)
            rows_of.append(list(range(start, len(order))))
        succ = process.select(state, order)
        process.propose(succ)
        texts = process.preview(succ)
        live = [r for r in range(len(order)) if not term[order[r]]]
        succ_scores = [scores[order[r]] for r in range(len(order))]
        for r, sc in zip(live, checked_scores(scorer, [cond] * len(live), [texts[r] for r in live]), strict=True):
            succ_scores[r] = sc
        return succ, succ_scores, rows_of
