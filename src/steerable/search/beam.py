"""Step-level beam search with a PRM, and diverse verifier tree search (DVTS).

Beam search (as in "Scaling test-time compute" / search-and-learn): keep
``budget / expansions`` beams; every step, expand each live beam
``expansions`` times, score every new step with the PRM and keep the best
``budget / expansions``. Finished beams leave the frontier and compete at the
end on their final score.

DVTS (same source): split the budget into ``budget / expansions``
independent subtrees, each a greedy beam of width 1 expanded ``expansions``
ways per step, so the frontier cannot collapse onto one prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from steerable.config import check, opt
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, no_answer, require
from steerable.search.process import C, Process
from steerable.search.result import Candidate, Result


@dataclass(frozen=True)
class BeamSearch:
    expansions: int = opt(4, "M: children per beam per step.", ge=1, le=64)
    diverse: bool = opt(False, "DVTS: independent subtrees instead of one shared frontier.")
    extract: Extract = no_answer

    def __post_init__(self) -> None:
        check(self, f"{self.name}: ")

    @property
    def name(self) -> str:
        return "dvts" if self.diverse else "beam"

    def run(self, process: Process, scorer: Scorer, budget: int, cond: C, seed: int | None = None) -> Result:
        require(budget, scorer, self.name)
        m = max(1, min(self.expansions, budget))
        width = max(1, budget // m)
        meter = Meter(process, scorer)
        state = process.init(cond, width * m, seed)
        tree = [i // m for i in range(width * m)]  # DVTS subtree of each row
        done: list[tuple[str, float]] = []
        steps = 0
        while process.size(state) > 0:
            process.propose(state)
            steps += 1
            texts = process.preview(state)
            scores = checked_scores(scorer, [cond] * len(texts), texts)
            term = process.is_terminal(state)
            done += [(texts[i], scores[i]) for i in range(len(texts)) if term[i]]
            live = [i for i in range(len(texts)) if not term[i]]
            if not live:
                break
            if self.diverse:  # the best live row of each subtree that is still open
                best: dict[int, int] = {}
                for i in live:
                    if tree[i] not in best or scores[i] > scores[best[tree[i]]]:
                        best[tree[i]] = i
                keep = list(best.values())
            else:  # every finished beam takes a slot of the frontier for good
                slots = width - len(done)
                if slots < 1:
                    break
                keep = sorted(live, key=lambda i: scores[i], reverse=True)[:slots]
            rows = [i for i in keep for _ in range(m)]
            tree = [tree[i] for i in rows]
            state = process.select(state, rows)
        if not done:
            texts = process.preview(state)
            done = list(zip(texts, checked_scores(scorer, [cond] * len(texts), texts), strict=True))
        pick = max(range(len(done)), key=lambda i: done[i][1])
        cands = tuple(Candidate(t, self.extract(t), s, float(i == pick)) for i, (t, s) in enumerate(done))
        return Result(self.name, budget, done[pick][0], cands[pick].answer, cands, meter.cost(), {"steps": steps})
