"""The thought-graph environment of ARIES on the chains tasks: nodes are sub-chains, actions transform the graph,
the acting model executes them and an exact step verifier scores them.

A chain ``start`` + ``ops`` is evaluated left to right, so a node is a
contiguous run of its operations, ``[lo, hi)``, and its start is the value
the chain has reached at ``lo``: known once the node ending there has a
result (the dependency edge of the graph; the root's start is the task's).
The actions (Gimenes et al.'s transformations):

- ``decompose(n, at)``: split a leaf into ``[lo, lo+at)`` and ``[lo+at, hi)``;
  a first part already verified inside the parent's best attempt is verified
  at once (its lines are reused, no model call).
- ``solve(n)``: the model answers the node as a text-only calculator task,
  ``Q: {start}{ops}=`` (greedy; ``sample=True`` draws at the process's
  temperature, k rows at once).
- ``refine(n)``: the model rewrites the node's best attempt from its first
  line the verifier rejected, sampling (greedy would write that line again).
- ``aggregate(n)``: a decomposed node whose children all verified takes the
  last child's result and their lines (no model call: joining consecutive
  runs of a chain is exact).
- ``accept(n)``: what a static schedule does with a node that never verified:
  its best attempt's answer becomes the next node's start, unverified.

The verifier (:func:`verify`) checks every line ``a op b=r`` the model
wrote: that it takes the next operation of the question from the running
value, and that ``r`` is right; a ``check`` line must repeat its step and an
answer line must give the value reached. A node's score is the share of its
question's steps verified before the first rejected line, as unit tests
score a HumanEval candidate in the paper. The episode's own verdict is the
chains environment's replay of the final answer.

The calculator takes at most :data:`~steerable.tasks.agent.envs.calculator.MAX_OPS`
operations, so a node is solvable once its question fits; a start of 100 or
more is posed as a small product (:func:`pose`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from steerable.agents.process import AgentProcess, Episode
from steerable.errors import ConfigError
from steerable.search.base import run_to_end
from steerable.streams import derive_seed
from steerable.tasks.agent.envs import make_env
from steerable.tasks.agent.envs.calculator import MAX_OPS
from steerable.tasks.agent.envs.chains import chain_ops

Op = tuple[str, int]
_STEP = re.compile(r"(\d+)([+\-*])(\d+)=(?:[^=]*=)*(-?\d+)")  # a op b=r (or the mental form a*b=...=r)
_ANSWER = re.compile(r"A:\s*(-?\d+)")


def apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def pose(start: int) -> tuple[int, tuple[Op, ...]] | None:
    """How a node's start opens its calculator question: itself below 100, else a small product and adds
    (``744`` -> ``93*8``, ``745`` -> ``93*8+1``); None outside 0..999. The arithmetic model learned chains whose
    first number is 1..99 and reads a three-digit one as its first two digits (0 of 165 such segments solved,
    measured), while it multiplies and carries three-digit values along a chain well."""
    if not 0 <= start <= 999:
        return None
    if start < 100:
        return start, ()
    k = next((k for k in range(2, 10) if start // k <= 99), 9)
    a = min(start // k, 99)
    rest, adds = start - a * k, []
    while rest:
        adds.append(("+", min(rest, 99)))
        rest -= adds[-1][1]
    return a, (("*", k), *adds)


@dataclass(frozen=True)
class Check:
    """The step verifier's verdict on a node's solution text."""

    steps: int  # leading steps verified
    total: int  # the question's steps
    verified: bool  # every step verified and no line contradicting them
    value: int  # the value after the verified steps
    keep: int  # characters up to the first rejected line (what a refinement keeps)
    ends: tuple[int, ...]  # where each verified step's line ends (a character offset, after its newline)
    values: tuple[int, ...]  # the value after each verified step
    answer: str | None  # the model's last answer line, verified or not

    @property
    def score(self) -> float:
        return self.steps / self.total


def verify(first: int, ops: Sequence[Op], text: str) -> Check:
    """Check ``text``, the model's solution of the question ``first`` + ``ops``, line by line (see the module)."""
    value, steps, last, pos, ends, values, bad = first, 0, None, 0, [], [], False
    for line in text.splitlines(keepends=True):
        s = line.strip()
        if s:
            ok = False
            if s.startswith("check "):
                ok = s[6:].strip() == last
            elif m := _ANSWER.fullmatch(s):
                ok = steps == len(ops) and int(m.group(1)) == value
            elif (m := _STEP.fullmatch(s)) and steps < len(ops):
                a, op, b, r = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
                ok = (a, op, b) == (value, *ops[steps]) and r == apply(a, op, b)
                if ok:
                    value, steps, last = r, steps + 1, s
                    ends.append(pos + len(line))
                    values.append(r)
            if not ok:
                bad = True
                break
        pos += len(line)
    answers = _ANSWER.findall(text)
    return Check(steps, len(ops), not bad and steps == len(ops), value, pos, tuple(ends), tuple(values),
                 answers[-1] if answers else None)  # fmt: skip


@dataclass(frozen=True)
class Attempt:
    """One solution of a node's question, with its verdict."""

    first: int
    ops: tuple[Op, ...]  # the question's operations: the start's encoding, then the node's
    text: str
    check: Check

    @property
    def question(self) -> str:
        return f"{self.first}" + "".join(f"{op}{b}" for op, b in self.ops)


@dataclass
class Node:
    id: int
    lo: int  # the node is the chain's operations [lo, hi)
    hi: int
    parent: int | None = None
    children: tuple[int, ...] = ()
    attempts: int = 0
    best: Attempt | None = None
    verified: bool = False
    result: int | None = None  # its verified result
    lines: str = ""  # its verified steps, for the transcript

    @property
    def size(self) -> int:
        return self.hi - self.lo

    def verified_ops(self) -> int:
        """The node's own operations its best attempt verified (the start's encoding steps not counted)."""
        if self.best is None:
            return 0
        return max(0, self.best.check.steps - (len(self.best.ops) - self.size))


@dataclass(frozen=True)
class NodeView:
    """What a policy sees of a node."""

    id: int
    lo: int
    hi: int
    parent: int | None
    children: tuple[int, ...]
    start_known: bool
    posed: int | None  # operations of its calculator question (its start's encoding included); None: start unknown
    state: str  # open (never tried), failed, verified or decomposed
    attempts: int
    score: float | None  # the best attempt's share of verified steps
    verified_ops: int  # the node's operations its best attempt verified

    @property
    def size(self) -> int:
        return self.hi - self.lo


@dataclass(frozen=True)
class GraphSummary:
    """The graph as the policy reads it: every node, and the model calls left."""

    nodes: tuple[NodeView, ...]
    calls_left: int
    max_ops: int = MAX_OPS

    def leaves(self) -> list[NodeView]:
        return sorted((n for n in self.nodes if not n.children), key=lambda n: n.lo)

    def text(self) -> str:
        """The summary in words, as the paper's policy LLM is prompted with the graph's state."""
        rows = [f"{self.calls_left} model calls left; a question holds at most {self.max_ops} operations"]
        for n in self.nodes:
            what = f"node {n.id}: ops {n.lo}..{n.hi} ({n.size}), {n.state}"
            if n.children:
                what += f", children {', '.join(map(str, n.children))}"
            elif n.posed is None:
                what += ", start unknown"
            else:
                what += f", question of {n.posed} ops"
            if n.attempts:
                what += f", {n.attempts} attempts, score {n.score:.2f} ({n.verified_ops} ops verified)"
            rows.append(what)
        return "\n".join(rows)


@dataclass
class Solver:
    """The reasoning agent: text-only calculator episodes of the acting model (greedy, or sampled at the
    process's temperature), each row's text continuing ``kept``."""

    greedy: AgentProcess
    sampling: AgentProcess
    seed: int | None = None
    calls: int = 0

    def __call__(self, question: str, kept: str, n: int, sample: bool) -> list[str]:
        env = make_env("calculator")
        line = env.reset({"env": "calculator", "expression": question}, tools=False)
        proc = self.sampling if sample else self.greedy
        seed = derive_seed(self.seed, self.calls) if self.seed is not None else None
        self.calls += n
        state = proc.init(Episode(env, proc.codec.prompt(env, line) + kept), n, seed)
        run_to_end(proc, state)
        return [kept + t for t in proc.preview(state)]


class ThoughtGraph:
    """A chain's thought graph and its actions (see the module); ``solver`` runs the model."""

    def __init__(self, start: int, ops: str, solver: Solver) -> None:
        self.ops = chain_ops(ops)
        self.nodes = [Node(0, 0, len(self.ops))]
        self.values: dict[int, tuple[int, bool]] = {0: (start, True)}  # chain position -> (value, verified)
        self.solver = solver

    @property
    def calls(self) -> int:
        return self.solver.calls

    def start_of(self, n: Node) -> int | None:
        known = self.values.get(n.lo)
        return known[0] if known else None

    def question(self, n: Node) -> tuple[int, tuple[Op, ...]] | None:
        """The node's question (first number, operations), or None while its start is unknown or out of range."""
        start = self.start_of(n)
        posed = pose(start) if start is not None else None
        return None if posed is None else (posed[0], posed[1] + tuple(self.ops[n.lo : n.hi]))

    def leaves(self) -> list[Node]:
        return sorted((n for n in self.nodes if not n.children), key=lambda n: n.lo)

    # -- actions --------------------------------------------------------------------------------------------

    def decompose(self, n: Node, at: int) -> tuple[Node, Node]:
        if n.children or n.verified or not 0 < at < n.size:
            raise ConfigError(f"decompose: node {n.id} ({n.size} ops) cannot be split at {at}")
        a = Node(len(self.nodes), n.lo, n.lo + at, n.id)
        b = Node(a.id + 1, n.lo + at, n.hi, n.id)
        n.children = (a.id, b.id)
        self.nodes += [a, b]
        if n.best is not None and n.verified_ops() >= at:  # the first part is verified inside the parent's attempt
            c = n.best.check
            k = len(n.best.ops) - n.size + at  # the steps of the start's encoding, then ``at`` of the node's
            self._verified(a, c.values[k - 1], f"Q: {n.best.question}=\n" + _steps_only(n.best.text[: c.ends[k - 1]]))
        return a, b

    def solve(self, n: Node, k: int = 1, sample: bool = False) -> Check:
        first, ops = self._posed(n, "solve")
        texts = self.solver("".join([str(first), *(f"{op}{b}" for op, b in ops)]), "", k, sample)
        return self._record(n, first, ops, texts)

    def refine(self, n: Node) -> Check:
        if n.best is None or n.verified:
            raise ConfigError(f"refine: node {n.id} has no failed attempt to refine")
        first, ops = self._posed(n, "refine")
        kept = n.best.text[: n.best.check.keep]
        return self._record(n, first, ops, self.solver(n.best.question, kept, 1, True))

    def aggregate(self, n: Node) -> None:
        kids = [self.nodes[c] for c in n.children]
        if not kids or not all(k.verified for k in kids):
            raise ConfigError(f"aggregate: node {n.id} needs every child verified")
        self._verified(n, kids[-1].result, "".join(k.lines for k in kids))

    def accept(self, n: Node) -> bool:
        """Take the best attempt's answer as the next start, unverified; False when it gave none in range."""
        ans = n.best.check.answer if n.best is not None else None
        if ans is None or not 0 <= int(ans) <= 999:
            return False
        self.values.setdefault(n.hi, (int(ans), False))
        return True

    # -- reading the graph ----------------------------------------------------------------------------------

    def summary(self, calls_left: int) -> GraphSummary:
        views = []
        for n in self.nodes:
            q = None if n.children else self.question(n)
            state = ("verified" if n.verified else "decomposed" if n.children else
                     "failed" if n.attempts else "open")  # fmt: skip
            views.append(NodeView(n.id, n.lo, n.hi, n.parent, n.children, self.start_of(n) is not None,
                                  None if q is None else len(q[1]), state, n.attempts,
                                  n.best.check.score if n.best else None, n.verified_ops()))  # fmt: skip
        return GraphSummary(tuple(views), calls_left)

    def answer(self) -> str | None:
        """The root's result once verified; else the value reached at the chain's end (a static schedule's
        accepted answer) or the last node's own answer line, unverified."""
        end = self.values.get(len(self.ops))
        if end is not None:
            return str(end[0])
        last = self.leaves()[-1]
        return last.best.check.answer if last.best is not None else None

    def transcript(self) -> str:
        """Every leaf's question and steps in chain order (verified ones, else the best attempt's), then the
        answer: a text the chains environment replays to its verdict."""
        out = ""
        for n in self.leaves():
            if n.verified:
                out += n.lines
            elif n.best is not None:
                out += f"Q: {n.best.question}=\n" + _steps_only(n.best.text)
        ans = self.answer()
        return out + (f"A: {ans}" if ans is not None else "")

    # -- helpers --------------------------------------------------------------------------------------------

    def _posed(self, n: Node, action: str) -> tuple[int, tuple[Op, ...]]:
        q = None if n.children else self.question(n)  # a static schedule draws all its samples, verified or not
        if q is None or len(q[1]) > MAX_OPS:
            raise ConfigError(f"{action}: node {n.id} is not a leaf whose question is known and fits the calculator")
        return q

    def _record(self, n: Node, first: int, ops: tuple[Op, ...], texts: list[str]) -> Check:
        n.attempts += len(texts)
        for text in texts:
            att = Attempt(first, ops, text, verify(first, ops, text))
            if n.best is None or (att.check.verified, att.check.steps) > (n.best.check.verified, n.best.check.steps):
                n.best = att
        if n.best.check.verified and not n.verified:
            self._verified(n, n.best.check.value, f"Q: {n.best.question}=\n" + _steps_only(n.best.text))
        return n.best.check

    def _verified(self, n: Node, value: int, lines: str) -> None:
        n.verified, n.result, n.lines = True, value, lines
        self.values[n.hi] = (value, self.values[n.lo][1])


def _steps_only(text: str) -> str:
    """A solution's lines without its answer line (the chains environment would end the episode on it)."""
    kept = [ln for ln in text.split("\n") if ln.strip() and not _ANSWER.fullmatch(ln.strip())]
    return "".join(ln + "\n" for ln in kept)
