"""ARIES (Gimenes et al., 2025, "ARIES: Autonomous Reasoning with LLMs on Interactive Thought Graph
Environments") and the static transformation schedules it is measured against.

The paper casts thought-graph transformations as actions of a Markov
decision process: a policy agent reads the graph's state (its nodes, their
scores) and picks the next action with its target nodes (decompose, solve,
refine, aggregate, or stop); a reasoning agent carries it out and a verifier
(HumanEval's tests, a sorting checker) scores the new thoughts. Against it
stand static schedules in the style of Graph of Thoughts: a fixed graph of
operations (split, k solutions per part, keep the best, refine while
invalid, merge) whose hyperparameters are searched per task. The headline:
up to 29% higher HumanEval accuracy than the static schedules at 35% less
inference cost, without that search.

Here the environment is :class:`~steerable.agents.thought_graph.ThoughtGraph`
on the chains tasks, the reasoning agent is the acting model answering a node
as a text-only calculator question, and the verifier is the exact step
verifier; the episode's success is the chains environment's replay of the
answer. ``budget`` is the model calls (solve and refine rows) a task may
use. ``Result.info["counts"]`` says how often each action fired.

:class:`RulePolicy` is ARIES's policy. Where this differs from the paper, and
why: the paper's policy is a prompted LLM (with in-context planning and an
ensemble of sampled actions voted on); the built-in models are tiny char
models that cannot read a graph, so the policy is the rule such a prompt
tells the LLM to follow, applied to the same summary
(:class:`~steerable.agents.thought_graph.GraphSummary`, whose ``text()`` is
what an LLM would read). It is deterministic, so an action ensemble would
vote unanimously and is left out. The paper's ``reduce`` (keep the best
thoughts of a node) is folded into every node keeping its best attempt.
Aggregating consecutive runs of a chain is exact, so ``aggregate`` calls no
model. Refinement continues the best attempt from its first rejected line
(the verifier's feedback is where the attempt went wrong), sampling at the
process's temperature, since this model cannot read feedback written as text.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from steerable.agents.process import AgentProcess, Episode, answer_of
from steerable.agents.thought_graph import GraphSummary, Solver, ThoughtGraph
from steerable.config import check, opt
from steerable.errors import ConfigError
from steerable.lm.types import SamplingParams
from steerable.search.base import Extract, Meter
from steerable.search.result import Candidate, Result
from steerable.tasks.agent.envs.calculator import MAX_OPS


@dataclass(frozen=True)
class Action:
    """A transformation of the thought graph and its target (``at``: where ``decompose`` splits)."""

    kind: Literal["decompose", "solve", "refine", "aggregate", "stop"]
    node: int = 0
    at: int = 0


@dataclass(frozen=True)
class RulePolicy:
    """What ARIES's policy prompt tells the policy LLM to do, as a rule over the graph's summary:

    1. stop once the root verified;
    2. aggregate a decomposed node whose children all verified;
    3. stop when no model call is left;
    4. work on the first unverified leaf in chain order (the one whose start is known): decompose it if its
       question is too long for the calculator, keeping the largest part that fits (solve big chunks first);
       solve it if never tried; refine a failed one up to ``refines`` times; then decompose it where its best
       attempt went wrong (its verified part is kept, no model call), or in halves when nothing verified; a
       failed single operation is refined until the budget ends.
    """

    refines: int = 1

    def __call__(self, s: GraphSummary) -> Action:
        if s.nodes[0].state == "verified":
            return Action("stop")
        for n in reversed(s.nodes):  # children come after their parent: the deepest first
            if n.state == "decomposed" and all(s.nodes[c].state == "verified" for c in n.children):
                return Action("aggregate", n.id)
        if s.calls_left <= 0:
            return Action("stop")
        leaf = next(n for n in s.leaves() if n.state != "verified")
        if leaf.posed is None:
            return Action("stop")  # its start is out of the calculator's range
        fit = s.max_ops - (leaf.posed - leaf.size)
        if leaf.size > fit:
            return Action("decompose", leaf.id, fit)
        if leaf.state == "open":
            return Action("solve", leaf.id)
        if leaf.attempts <= self.refines or leaf.size == 1:
            return Action("refine", leaf.id)
        at = leaf.verified_ops if 0 < leaf.verified_ops < leaf.size else leaf.size // 2
        return Action("decompose", leaf.id, at)


@dataclass(frozen=True)
class Aries:
    """ARIES on the chains tasks: the policy picks each action from the graph's summary; ``budget`` caps the
    model calls."""

    extract: Extract = answer_of
    refines: int = opt(1, "Refinements of a failed node before the policy decomposes it.", ge=0, le=16)
    name = "aries"

    def __post_init__(self) -> None:
        check(self)

    def run(self, process, scorer, budget: int, cond: Episode, seed: int | None = None) -> Result:
        graph, meter = _graph(process, cond, seed, self.name), Meter(process, None)
        policy, counts = RulePolicy(self.refines), Counter()
        for _ in range(8 * len(graph.ops) + 4 * budget + 8):  # every action spends a call or grows the graph
            action = policy(graph.summary(budget - graph.calls))
            counts[action.kind] += 1
            if action.kind == "stop":
                break
            node = graph.nodes[action.node]
            if action.kind == "decompose":
                graph.decompose(node, action.at)
            elif action.kind == "solve":
                graph.solve(node)
            elif action.kind == "refine":
                graph.refine(node)
            else:
                graph.aggregate(node)
        return _result(self, graph, budget, meter, counts)


@dataclass(frozen=True)
class StaticSchedule:
    """A static Graph-of-Thoughts schedule on the chains tasks: split the chain into parts of ``part``
    operations; for each part in order, ``samples`` solutions (Generate, the first greedy, the rest sampled),
    keep the best (KeepBest), refine it while the verifier rejects it, at most ``refines`` times
    (ValidateAndImprove), and carry its answer, verified or not, to the next part; aggregate at the end.
    ``part=0`` takes as many operations as the calculator holds after each part's start (with ``samples=1``,
    ``refines=0``: plain IO in the largest pieces). ``budget`` caps the model calls: the schedule stops where
    they run out."""

    extract: Extract = answer_of
    part: int = opt(0, "Operations per part (0: as many as the calculator takes after the part's start).", ge=0,
                    le=MAX_OPS - 3)  # fmt: skip
    samples: int = opt(1, "Solutions per part, the best kept: the first greedy, the rest sampled.", ge=1, le=16)
    refines: int = opt(0, "Refinements of a part whose kept solution fails.", ge=0, le=16)
    name = "static"

    def __post_init__(self) -> None:
        check(self)

    def run(self, process, scorer, budget: int, cond: Episode, seed: int | None = None) -> Result:
        graph, meter, counts = _graph(process, cond, seed, self.name), Meter(process, None), Counter()
        node = graph.nodes[0]
        while budget > graph.calls:
            q = graph.question(node)
            if q is None:
                break  # the last part's answer was missing or out of range
            fit = MAX_OPS - (len(q[1]) - node.size)
            size = min(self.part or fit, fit)
            rest = None
            if node.size > size:
                node, rest = graph.decompose(node, size)
                counts["decompose"] += 1
            graph.solve(node)
            counts["solve"] += 1
            if self.samples > 1 and budget > graph.calls:
                graph.solve(node, min(self.samples - 1, budget - graph.calls), sample=True)
                counts["solve"] += 1
            for _ in range(self.refines):
                if node.verified or budget <= graph.calls:
                    break
                graph.refine(node)
                counts["refine"] += 1
            if not node.verified and not graph.accept(node):
                break
            if rest is None:
                break
            node = rest
        for n in reversed(graph.nodes):
            if n.children and not n.verified and all(graph.nodes[c].verified for c in n.children):
                graph.aggregate(n)
                counts["aggregate"] += 1
        return _result(self, graph, budget, meter, counts)


def _graph(process, cond: Episode, seed: int | None, name: str) -> ThoughtGraph:
    if cond.env.name != "chains":
        raise ConfigError(f"{name} runs the chains environment (its thought graph splits a chain), not "
                          f"{cond.env.name}: use --env builtin:chains")  # fmt: skip
    if not isinstance(process, AgentProcess):
        raise ConfigError(f"{name} needs an agent process (steerable agent scale builds one)")
    # solving is greedy; refining and extra samples draw at the process's own temperature. The greedy copy shares
    # the generator, so every token it generates is in the process's usage (text-only questions take no env step)
    greedy = process if process.params.greedy else dataclasses.replace(process, params=SamplingParams(temperature=0))
    task = cond.env.task
    return ThoughtGraph(task["start"], task["ops"], Solver(greedy, process, seed))


def _result(method, graph: ThoughtGraph, budget: int, meter: Meter, counts: Counter) -> Result:
    text = graph.transcript()
    ans = method.extract(text)
    done = sum(n.size for n in graph.leaves() if n.verified) / max(len(graph.ops), 1)
    info = {
        "counts": {**counts, "model_calls": graph.calls, "verified_root": int(graph.nodes[0].verified)},
        "graph": graph.summary(budget - graph.calls).text(),
    }
    return Result(method.name, budget, text, ans, (Candidate(text, ans, done, 1.0),), meter.cost(), info)
