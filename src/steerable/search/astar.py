"""A*-decoding ("A*-Decoding: Token-Efficient Inference Scaling").

A priority queue of partial solutions ordered by f = g + h, with the PRM as the
heuristic h(s) = 1 - r(s) and g = ``depth_cost`` x steps taken (0 by default,
which is best-first search on the PRM). Each iteration pops the ``parallel``
best nodes, samples ``expansions`` next steps for each in one batch, scores
them and pushes the children. The search stops when ``budget`` complete
solutions are found or after ``budget * max_pops_per_sample`` pops; the answer
is the complete solution with the best PRM score.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from steerable.config import check, opt
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, no_answer, require
from steerable.search.process import C, Process
from steerable.search.result import Candidate, Result


@dataclass(frozen=True)
class AStar:
    expansions: int = opt(4, "k: candidate steps per pop.", ge=1, le=64)
    parallel: int = opt(2, "Nodes popped per iteration, expanded in one batch.", ge=1, le=64)
    depth_cost: float = opt(0.0, "g per step taken.", ge=0.0, le=1000.0)
    max_pops_per_sample: int = opt(40, "The search stops after budget x this many pops.", ge=1, le=1000)
    extract: Extract = no_answer
    name = "astar"

    def __post_init__(self) -> None:
        check(self, "astar: ")

    def run(self, process: Process, scorer: Scorer, budget: int, cond: C, seed: int | None = None) -> Result:
        require(budget, scorer, "astar")
        meter = Meter(process, scorer)
        tie = itertools.count()
        root = process.init(cond, 1, seed)
        queue: list[tuple[float, int, int, object]] = [(1.0, next(tie), 0, root)]  # (f, tiebreak, depth, state)
        done: list[tuple[str, float]] = []
        pops = 0
        while queue and len(done) < budget and pops < budget * self.max_pops_per_sample:
            popped = [heapq.heappop(queue) for _ in range(min(self.parallel, len(queue)))]
            pops += len(popped)
            batch = process.concat([process.select(s, [0] * self.expansions) for _, _, _, s in popped])
            process.propose(batch)
            texts = process.preview(batch)
            scores = checked_scores(scorer, [cond] * len(texts), texts)
            term = process.is_terminal(batch)
            for i, (text, r) in enumerate(zip(texts, scores, strict=True)):
                depth = popped[i // self.expansions][2] + 1
                if term[i]:
                    done.append((text, r))
                else:
                    f = self.depth_cost * depth + (1.0 - r)
                    heapq.heappush(queue, (f, next(tie), depth, process.select(batch, [i])))
        if not done:  # out of pops: finish the best open node greedily so there is an answer
            _, _, _, s = heapq.heappop(queue)
            while not all(process.is_terminal(s)):
                process.propose(s)
            text = process.preview(s)[0]
            done.append((text, checked_scores(scorer, [cond], [text])[0]))
        pick = max(range(len(done)), key=lambda i: done[i][1])
        cands = tuple(Candidate(t, self.extract(t), r, float(i == pick)) for i, (t, r) in enumerate(done))
        return Result(self.name, budget, done[pick][0], cands[pick].answer, cands, meter.cost(), {"pops": pops})
