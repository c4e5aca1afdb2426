"""Sample N, then choose: greedy, best-of-N, weighted best-of-N, self-consistency.

- Best-of-N: the sample with the highest (aggregated) score.
- Weighted best-of-N: scores summed per distinct answer; the heaviest answer
  wins (search-and-learn's convention).
- Self-consistency (Wang et al., "Self-Consistency Improves Chain of Thought
  Reasoning"): majority vote over extracted answers, no scorer; optionally an
  adaptive early stop once one answer's lead can no longer be overturned.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from steerable.config import check, opt
from steerable.errors import ConfigError
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, no_answer, require, run_to_end
from steerable.search.process import C, Process, Sample, TokenBudgeted
from steerable.search.result import Candidate, Result
from steerable.streams import derive_seed


def _sample(process: Process, cond: C, n: int, seed: int | None) -> Sequence[Sample]:
    state = run_to_end(process, process.init(cond, n, seed))
    return process.preview(state)


@dataclass(frozen=True)
class Greedy:
    """One sample at the process's own settings (use temperature 0 for true greedy decoding)."""

    extract: Extract = no_answer
    name = "greedy"

    def run(self, process: Process, scorer: Scorer | None, budget: int, cond: C, seed: int | None = None):
        meter = Meter(process, None)
        sample = _sample(process, cond, 1, seed)[0]
        ans = self.extract(sample)
        return Result(self.name, 1, sample, ans, (Candidate(sample, ans, float("nan"), 1.0),), meter.cost())


@dataclass(frozen=True)
class BestOfN:
    extract: Extract = no_answer
    name = "bon"

    def run(self, process: Process, scorer: Scorer, budget: int, cond: C, seed: int | None = None):
        require(budget, scorer, self.name)
        meter = Meter(process, scorer)
        samples = _sample(process, cond, budget, seed)
        scores = checked_scores(scorer, [cond] * len(samples), samples)
        best = max(range(len(samples)), key=lambda i: scores[i])
        cands = tuple(
            Candidate(t, self.extract(t), s, float(i == best))
            for i, (t, s) in enumerate(zip(samples, scores, strict=True))
        )
        return Result(self.name, budget, samples[best], cands[best].answer, cands, meter.cost())


@dataclass(frozen=True)
class WeightedBestOfN:
    extract: Extract = no_answer
    name = "wbon"

    def run(self, process: Process, scorer: Scorer, budget: int, cond: C, seed: int | None = None):
        require(budget, scorer, self.name)
        meter = Meter(process, scorer)
        samples = _sample(process, cond, budget, seed)
        scores = checked_scores(scorer, [cond] * len(samples), samples)
        answers = [self.extract(t) for t in samples]
        totals: dict[str | None, float] = defaultdict(float)
        for a, s in zip(answers, scores, strict=True):
            if a is not None:
                totals[a] += s
        winner = max(totals, key=totals.get) if totals else None
        pick = max(
            (i for i in range(len(samples)) if answers[i] == winner),
            key=lambda i: scores[i],
            default=max(range(len(samples)), key=lambda i: scores[i]),
        )
        total = sum(totals.values()) or 1.0
        cands = tuple(
            Candidate(t, a, s, totals.get(a, 0.0) / total) for t, a, s in zip(samples, answers, scores, strict=True)
        )
        return Result(self.name, budget, samples[pick], answers[pick], cands, meter.cost())


@dataclass(frozen=True)
class SelfConsistency:
    """Majority vote. ``early_stop`` samples in rounds of ``round_size`` and stops once the leader cannot lose.

    Length-aware voting ("Think Deep, Think Fast" finds correct answers are
    shorter): ``prefer_shorter`` breaks ties toward the answer whose samples
    are shorter on average; ``length_power`` p > 0 weights each vote by
    (mean length / its length)^p.
    """

    extract: Extract = no_answer
    early_stop: bool = opt(False, "Sample in rounds and stop once the leading answer cannot lose.")
    round_size: int = opt(4, "Samples per round with early_stop.", ge=1, le=1024)
    prefer_shorter: bool = opt(False, "Break ties toward the answer whose samples are shorter.")
    length_power: float = opt(0.0, "p: weight each vote by (mean length / its length)^p.", ge=0.0, le=16.0)
    name = "sc"

    def __post_init__(self) -> None:
        check(self, f"{self.name}: ")

    def run(self, process: Process, scorer: Scorer | None, budget: int, cond: C, seed: int | None = None):
        if budget < 1:
            raise ConfigError(f"budget must be >= 1 (got {budget})")
        meter = Meter(process, None)
        samples: list[Sample] = []
        rounds = 0
        while len(samples) < budget:
            k = min(self.round_size if self.early_stop else budget, budget - len(samples))
            # round 0 draws what plain self-consistency draws; later rounds their own streams
            sub = seed if seed is None or rounds == 0 else derive_seed(seed, "sc-round", rounds)
            samples += list(_sample(process, cond, k, sub))
            rounds += 1
            if isinstance(process, TokenBudgeted) and process.tokens_left == 0:
                break  # the run's token budget is spent
            votes = Counter(a for a in map(self.extract, samples) if a is not None)
            if self.early_stop and votes:
                (lead, n1), *rest = votes.most_common(2) + [(None, 0)]
                if n1 - rest[0][1] > budget - len(samples):
                    break
        answers = [self.extract(t) for t in samples]
        mean_len = sum(map(len, samples)) / len(samples) or 1.0
        weight: dict[str, float] = defaultdict(float)
        lengths: dict[str, list[int]] = defaultdict(list)
        for t, a in zip(samples, answers, strict=True):
            if a is not None:
                weight[a] += (mean_len / max(len(t), 1)) ** self.length_power
                lengths[a].append(len(t))
        order = sorted(
            weight,
            key=lambda a: (-weight[a], sum(lengths[a]) / len(lengths[a]) if self.prefer_shorter else answers.index(a)),
        )
        winner = order[0] if order else None
        mine = [i for i, a in enumerate(answers) if a == winner]
        pick = min(mine, key=lambda i: len(samples[i])) if mine and self.prefer_shorter else (mine or [0])[0]
        total = sum(weight.values()) or 1.0
        cands = tuple(
            Candidate(t, a, float("nan"), weight.get(a, 0.0) / total) for t, a in zip(samples, answers, strict=True)
        )
        return Result(self.name, budget, samples[pick], winner, cands, meter.cost(), {"samples": len(samples)})
