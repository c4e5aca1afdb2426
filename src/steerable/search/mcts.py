"""Monte Carlo tree search over reasoning steps, with PRM values (AlphaMath-style).

"AlphaMath Almost Zero: Process Supervision without Process": a node is a
partial solution; a simulation descends by UCT, Q(s,a) + c * sqrt(ln N(s) /
N(s,a)), to a leaf, expands it with ``expansions`` sampled next steps (one
batch), values each child with the scorer (the PRM stands in for AlphaMath's
value head) and backs the values up as running means. ``budget`` is the number
of simulations. The answer is the complete solution with the best score; ties
go to the most visited.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from steerable.config import check, opt
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, no_answer, require
from steerable.search.process import C, Process
from steerable.search.result import Candidate, Result


@dataclass
class _Node:
    state: object
    text: str
    value: float = 0.0  # running mean of backed-up values
    visits: int = 0
    terminal: bool = False
    children: list[_Node] = field(default_factory=list)


@dataclass(frozen=True)
class MCTS:
    expansions: int = opt(3, "Children sampled when a leaf is expanded.", ge=1, le=64)
    c_uct: float = opt(1.0, "c: the exploration weight in UCT.", ge=0.0, le=100.0)
    extract: Extract = no_answer
    name = "mcts"

    def __post_init__(self) -> None:
        check(self, "mcts: ")

    def run(self, process: Process, scorer: Scorer, budget: int, cond: C, seed: int | None = None) -> Result:
        require(budget, scorer, "mcts")
        meter = Meter(process, scorer)
        root = _Node(process.init(cond, 1, seed), "")
        finished: list[_Node] = []
        for _ in range(budget):
            path = [root]
            node = root
            while node.children:
                live = [c for c in node.children if not c.terminal] or node.children
                node = max(live, key=lambda c: self._uct(node, c))
                path.append(node)
            if node.terminal:
                value = node.value
            else:
                batch = process.select(node.state, [0] * self.expansions)
                process.propose(batch)
                texts = process.preview(batch)
                scores = checked_scores(scorer, [cond] * len(texts), texts)
                term = process.is_terminal(batch)
                for i, (t, s) in enumerate(zip(texts, scores, strict=True)):
                    child = _Node(process.select(batch, [i]), t, s, 1, term[i])
                    node.children.append(child)
                    if term[i]:
                        finished.append(child)
                value = sum(scores) / len(scores)
            for n in path:  # back up the mean value
                n.visits += 1
                n.value += (value - n.value) / n.visits
        if not finished:  # no complete solution yet: finish the most promising leaf
            node = root
            while node.children:
                node = max(node.children, key=lambda c: (c.value, c.visits))
            s = node.state
            while not all(process.is_terminal(s)):
                process.propose(s)
            text = process.preview(s)[0]
            finished.append(_Node(s, text, checked_scores(scorer, [cond], [text])[0], 1, True))
        best = max(finished, key=lambda n: (n.value, n.visits))
        cands = tuple(Candidate(n.text, self.extract(n.text), n.value, float(n is best)) for n in finished)
        return Result(self.name, budget, best.text, self.extract(best.text), cands, meter.cost())

    def _uct(self, parent: _Node, child: _Node) -> float:
        return child.value + self.c_uct * math.sqrt(math.log(parent.visits + 1) / (child.visits + 1e-9))
