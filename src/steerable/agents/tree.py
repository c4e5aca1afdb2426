"""Best-first tree search over environment states (Koh et al., "Tree Search for Language Model Agents", 2024).

As the authors' ``SearchAgent`` does: from the current state, sample
``max(2b, 20)`` next turns, count duplicate actions and keep the ``b`` most
frequent as children, each with its share of the votes. The frontier is a
max-heap on the value of the node a child was proposed from (the root's
children enter at 0.5). Popping a child runs it in its own copy of the
environment and scores the state reached with the value function (one node
evaluation, counted against the budget ``c``); a value of 1 stops the search,
otherwise its children are proposed while its depth is below ``d``. When the
budget is spent, the agent commits the whole action sequence of the best node
found and searches again from there, until the episode ends.

Differences from the authors' code, and why:

- A node's environment is a fork of its parent's (``clone``); their reset
  and replay of the committed actions is the process's ``fork="replay"``
  (same states for a deterministic environment, every replayed step counted).
- The value function is a :class:`~steerable.reward.scorer.Scorer` over the
  transcript: the exact "on track" oracle (:class:`OracleValue`: 1 solved,
  0.5 on the right track, 0 failed, as their GPT-4o prompt is asked to
  answer) or a learned one, instead of 20 samples of a multimodal judge.
- An action here is a turn: the model's lines up to its next environment
  line, deduplicated by the environment lines it sent (their dedup is by the
  parsed action string).

Real steps are those of the committed trajectory
(:func:`~steerable.agents.process.real_steps`); every step a branch took in
its copy is counted in ``env_steps`` of the cost.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from steerable.agents.process import Episode, answer_of
from steerable.config import check, opt
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, require
from steerable.search.result import Candidate, Result
from steerable.streams import derive_seed
from steerable.tasks.agent.envs import replay


@dataclass(frozen=True)
class TreeSearch:
    """Best-first search; ``budget`` is the node budget ``c`` of each search."""

    extract: Extract = answer_of
    branching: int = opt(5, "b: children kept per expansion (the most frequent sampled actions).", ge=1, le=64)
    depth: int = opt(4, "d: the deepest node a search expands below the current state.", ge=1, le=32)
    samples: int = opt(0, "Turns sampled per expansion (0: the authors' max(2b, 20)).", ge=0, le=256)
    max_searches: int = opt(16, "Searches (commits) per episode at most.", ge=1, le=256)
    name = "tree"

    def __post_init__(self) -> None:
        check(self)

    def run(self, process, scorer: Scorer, budget: int, cond: Episode, seed: int | None = None) -> Result:
        require(budget, scorer, self.name)
        meter = Meter(process, scorer)
        top = scorer.range[1]
        real = process.init(cond, 1, seed)
        searches, evaluated, stopped_on_top = 0, 0, 0
        while not process.is_terminal(real)[0] and searches < self.max_searches:
            sub = derive_seed(seed, searches) if seed is not None else None
            best, spent, hit = self._search(process, scorer, cond, real, budget, top, sub)
            searches, evaluated, stopped_on_top = searches + 1, evaluated + spent, stopped_on_top + hit
            if best is None:
                break
            real = best
        text = process.preview(real)[0]
        value = checked_scores(scorer, [cond], [text])[0]
        info = {
            "counts": {"searches": searches, "node_evaluations": evaluated, "stopped_at_value_1": stopped_on_top},
            "real_steps": replay(cond.env, text).steps,
        }
        return Result(self.name, budget, text, self.extract(text), (Candidate(text, self.extract(text), value, 1.0),),
                      meter.cost(), info)  # fmt: skip

    def _children(self, process, state, seed: int | None):
        """The ``b`` most frequent distinct turns sampled from ``state`` (a one-row state), with vote shares."""
        n = self.samples or max(2 * self.branching, 20)
        forks = process.select(state, [0] * n)
        if seed is not None:
            forks.seqs.seed(seed)
        process.propose(forks)
        done = len(state.actions[0])
        texts = process.preview(forks)
        keys = [(tuple(forks.actions[r][done:]), answer_of(texts[r])) for r in range(n)]
        counts = Counter(keys)
        first = {k: keys.index(k) for k in counts}
        kept = [k for k, _ in counts.most_common(self.branching)]
        return [(process.select(forks, [first[k]]), counts[k] / n) for k in kept]

    def _search(self, process, scorer, cond, root, budget: int, top: float, seed: int | None):
        """One search from ``root``: (best node found or None, node evaluations, whether a node reached ``top``)."""
        tie = itertools.count()
        frontier: list = []
        seeds = (derive_seed(seed, i) if seed is not None else None for i in itertools.count())
        for child, share in self._children(process, root, next(seeds)):
            heapq.heappush(frontier, (-0.5, -share, next(tie), child, 1))
        best, best_value, spent = None, float("-inf"), 0
        while frontier and spent < budget:
            _, _, _, node, depth = heapq.heappop(frontier)
            value = checked_scores(scorer, [cond], process.preview(node))[0]
            spent += 1
            if value > best_value:
                best, best_value = node, value
            if value >= top:
                return best, spent, 1
            if depth < self.depth and not process.is_terminal(node)[0]:
                for child, share in self._children(process, node, next(seeds)):
                    heapq.heappush(frontier, (-value, -share, next(tie), child, depth + 1))
        return best, spent, 0


@dataclass
class OracleValue:
    """The exact value of a transcript's state: its environment rebuilt by replay, then 1 solved, 0.5 on the right
    track, 0 failed or off track (:meth:`~steerable.tasks.agent.envs.AgentEnv.progress`). It knows the hidden
    task, so it is the ceiling a learned value function can reach, as the authors' prompt asks GPT-4o to be."""

    range: tuple[float, float] = (0.0, 1.0)
    calls: int = 0
    forward_tokens: int = 0

    def score(self, conds: Sequence[Episode], samples: Sequence[str]) -> list[float]:
        self.calls += len(samples)
        return [replay(c.env, s).progress() for c, s in zip(conds, samples, strict=True)]
