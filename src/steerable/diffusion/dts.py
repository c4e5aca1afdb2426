"""Diffusion Tree Sampling and Diffusion Tree Search, DTS and DTS* (Jain, Sareen, Pedramfar and Ravanbakhsh,
"Diffusion Tree Sampling: Scalable inference-time alignment of diffusion models", NeurIPS 2025).

A tree over denoising states. The root is a dummy x_{T+1} whose children are
fresh x_T ~ N(0, I); a node keeps its state x_t, a soft value v and a visit
count N. Branching happens only every ``branch_every`` steps (with 50 DDIM
steps and 10: at the root and after 10, 20, 30, 40 steps), as in the paper.
One iteration (App. E, Alg. 1):

1. Selection from the root while the node is fully widened, |C(x)| >= C N(x)^alpha,
   and not a final x0. DTS draws a child with probability proportional to
   exp(lambda v); DTS* takes argmax v + c_uct sqrt(log N(parent) / N(child)).
2. Expansion: a new child of the node, one segment of the sampler from its state.
3. Rollout to x0 with the sampler; every state reached at a branch point joins
   the tree (unlike MCTS, nothing is thrown away).
4. Backup: v(x0) = r(x0); every ancestor v <- (1/lambda) log mean_children exp(lambda v)
   (a uniform mean over children, not visit-weighted), N += 1.

``budget`` is in samples, as for best-of-N: the run may spend at most
``budget * num_steps`` denoiser evaluations. A rollout shares its prefix with
the tree (the new child is ``select`` of its parent's state), so it costs
only the steps from the node it leaves to x0, and a rollout that would not fit
in what is left is not started.

``leaf_batch``: how many rollouts are in flight at once, denoised together
(one batched denoiser call per step). 1 is the paper's sequential
algorithm. With more, a pool of rollouts advances one segment
(``branch_every`` steps) at a time; after each segment the rollouts that
reached x0 are scored and backed up, and new leaves are selected to refill
the pool (visits counted as they are picked, so widening sees them; a node
whose children are all still in flight cannot be passed, and the pool steps
on without a new leaf). Every row draws its noise from its own stream, so a
leaf's rollout is the same in any batch: the answer differs from the
sequential one only where a selection is made before an earlier rollout's
value is backed up (DTS*'s UCT and DTS's Boltzmann draws then see fewer
values). Where selection does not depend on values (the root widening on
every visit, as with the paper's C and alpha at small budgets) the tree, the
NFE and the answer are the sequential ones.

The answer: DTS samples from the built tree by walking down with the same
Boltzmann rule (App. E, Alg. 2: no model call); DTS* returns the x0 of highest
reward in the tree (the search's best). Every x0 is a candidate; for DTS its
weight is the probability that the walk ends there.

Pitfall (measured, see the research notes): with the paper's C = 2,
alpha = 0.8, 2 N^0.8 >= N for N <= 32, so the root widens on every visit and
below about 32 rollouts the search is exactly best-of-N.
``info["expansions_below_root"]`` says whether any branching happened under
the root; small budgets need C = 1, alpha = 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from steerable.config import check, opt
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, no_answer, require
from steerable.search.process import C
from steerable.search.result import Candidate, Result
from steerable.streams import stream


@dataclass(eq=False)
class _Node:
    state: object  # a process state holding this node's x_t at ``row`` (None for the dummy root)
    row: int = field(default=0, kw_only=True)
    parent: _Node | None
    steps: int  # denoising steps taken to reach it (-1 for the root)
    value: float = 0.0
    visits: int = 0
    children: list[_Node] = field(default_factory=list)
    done: bool = False  # a final x0
    known: bool = False  # has a value (its rollout finished)
    sample: torch.Tensor | None = None
    reward: float = float("nan")


def _logmeanexp(xs: list[float], lam: float) -> float:
    m = max(lam * x for x in xs)
    return (m + math.log(sum(math.exp(lam * x - m) for x in xs) / len(xs))) / lam


class _Pool:
    """The rollouts in flight, one row each of one batched state; every segment steps all of them at once."""

    def __init__(self, process, scorer: Scorer, cond: C, seed: int) -> None:
        self.process, self.scorer, self.cond, self.seed = process, scorer, cond, seed
        self.batch = None  # DiffusionState of the rows in flight
        self.tips: list[_Node] = []  # each row's deepest node (its new child before its first segment)
        self.paths: list[list[_Node]] = []
        self.started: list[bool] = []  # the row's first segment is done (its tip has a state)

    def __len__(self) -> int:
        return len(self.tips)

    def add(self, parent: _Node, child: _Node, path: list[_Node]) -> None:
        """Start a rollout: ``child``, one segment below ``parent``, joins the batch."""
        process = self.process
        k = len(parent.children) - 1  # its number among its siblings: its noise stream
        if parent.parent is None:
            start = process.init(self.cond, 1, stream(self.seed, k))
        else:
            # the k-th branch of the parent's noise stream (child 0 continued the stream itself)
            start = process.select(process.select(parent.state, [parent.row] * (k + 1)), [k])
        self.batch = start if self.batch is None else process.concat([self.batch, start])
        self.tips.append(child)
        self.paths.append(path)
        self.started.append(False)

    def advance(self, steps: int) -> list[list[_Node]]:
        """One segment on every row (one denoiser call per step); each state reached joins the tree.

        Returns the paths of the rollouts that reached x0, scored and removed from the pool.
        """
        process, batch = self.process, self.batch
        before = batch.index.clone()
        process.propose(batch, steps=steps)
        moved = (batch.index != before).nonzero().flatten().tolist()
        snap = process.select(batch, moved) if moved else None  # one copy shared by the nodes reached here
        for i, r in enumerate(moved):
            node = self.tips[r]
            if self.started[r]:
                node = _Node(None, node, 0)
                self.tips[r].children.append(node)
            node.state, node.row = snap, i
            node.steps = int(batch.index[r])
            node.visits = max(node.visits, 1)
            self.tips[r], self.started[r] = node, True
        done = process.is_terminal(batch)
        ended = [r for r, d in enumerate(done) if d]
        if not ended:
            return []
        samples = process.preview(process.select(batch, ended))  # done rows: the sample itself, no model call
        rewards = checked_scores(self.scorer, [self.cond] * len(ended), samples)
        for i, r in enumerate(ended):
            node = self.tips[r]
            node.done, node.known = True, True
            node.sample, node.reward, node.value = samples[i], rewards[i], rewards[i]
        out = [self.paths[r] for r in ended]
        keep = [r for r, d in enumerate(done) if not d]
        self.batch = process.select(batch, keep) if keep else None
        self.tips, self.paths, self.started = ([xs[r] for r in keep] for xs in (self.tips, self.paths, self.started))
        return out


@dataclass(frozen=True)
class DiffusionTreeSampling:
    lam: float = opt(10.0, "lambda: the target p(x) exp(lambda r(x)); the soft backup's temperature.", gt=0.0, le=1e6)
    widen_c: float = opt(2.0, "C in progressive widening |C(x)| < C N(x)^alpha (the paper's 2).", gt=0.0, le=1e6)
    widen_alpha: float = opt(0.8, "alpha in progressive widening (the paper's 0.8 for images).", ge=0.0, le=1.0)
    branch_every: int = opt(10, "Denoising steps between branch points.", ge=1, le=10_000)
    greedy: bool = opt(False, "DTS*: select by UCT and answer the best x0, instead of DTS's Boltzmann sampling.")
    c_uct: float = opt(1.0, "DTS*: exploration constant of UCT.", ge=0.0, le=1e6)
    leaf_batch: int = opt(
        1, "Rollouts in flight, denoised in one batch per step (1: the paper's sequential loop).", ge=1, le=4096
    )
    extract: Extract = no_answer

    def __post_init__(self) -> None:
        check(self, f"{self.name}: ")

    @property
    def name(self) -> str:
        return "dts-star" if self.greedy else "dts"

    def run(self, process, scorer: Scorer, budget: int, cond: C, seed: int | None = None) -> Result:
        require(budget, scorer, self.name)
        meter = Meter(process, scorer)
        g = torch.Generator().manual_seed(0 if seed is None else seed)
        base_seed = int(torch.randint(0, 2**62, (), generator=g)) if seed is None else seed
        cap = budget * process.num_steps
        spent, picks, rollouts, revisits, below_root = 0, 0, 0, 0, 0
        root = _Node(None, None, -1)
        pool = _Pool(process, scorer, cond, base_seed)
        stop = False
        while True:
            # fill the pool up to leaf_batch rollouts; revisits of a final x0 cost nothing, picks bound them
            while not stop and len(pool) < self.leaf_batch and picks < 100 * budget + 1000:
                picks += 1
                path = self._select(root, g)
                if path is None:
                    break  # every open branch below is being rolled out: wait for one to come back
                node = path[-1]
                if node.done:  # a final x0 again: only the visit counts change
                    revisits += 1
                    self._backup(path)
                    continue
                cost = process.num_steps - max(node.steps, 0)
                if spent + cost > cap:  # the rollout would not fit in what is left: no more rollouts start
                    for n in path:
                        n.visits -= 1
                    stop = True
                    break
                spent += cost
                child = _Node(None, node, -2)
                node.children.append(child)
                below_root += node is not root
                pool.add(node, child, path + [child])
            if not len(pool):
                break
            for path in pool.advance(self.branch_every):  # the rollouts that reached x0 this segment
                rollouts += 1
                self._backup(path)
        finals = [n for n in self._nodes(root) if n.done]
        if self.greedy:
            chosen = max(finals, key=lambda n: n.reward)
            probs = {id(n): float(n is chosen) for n in finals}
        else:
            chosen = self._walk(root, g)
            probs = self._reach(root)
        cands = tuple(Candidate(n.sample, self.extract(n.sample), n.reward, probs.get(id(n), 0.0)) for n in finals)
        info = {
            "rollouts": rollouts,
            "expansions_below_root": below_root,
            "root_children": len(root.children),
            "revisits": revisits,
            "nfe_cap": cap,
            "widen_c": self.widen_c,
            "widen_alpha": self.widen_alpha,
        }
        return Result(self.name, budget, chosen.sample, self.extract(chosen.sample), cands, meter.cost(), info)

    # -- the four phases --------------------------------------------------------------------------------------

    def _widened(self, node: _Node) -> bool:
        return len(node.children) >= self.widen_c * max(node.visits, 1) ** self.widen_alpha

    def _select(self, root: _Node, g: torch.Generator) -> list[_Node] | None:
        """The path to a node to expand (or to a final x0); visits are counted on the way down."""
        path, node = [root], root
        while not node.done and self._widened(node):
            ready = [c for c in node.children if c.known]
            if not ready:
                for n in path[:-1]:
                    n.visits -= 1
                return None
            node = self._choose(node, ready, g)
            path.append(node)
        for n in path:
            n.visits += 1
        return path

    def _choose(self, parent: _Node, children: list[_Node], g: torch.Generator) -> _Node:
        if self.greedy:
            log_n = math.log(max(parent.visits, 1))
            return max(children, key=lambda c: c.value + self.c_uct * math.sqrt(log_n / max(c.visits, 1)))
        logits = torch.tensor([self.lam * c.value for c in children], dtype=torch.float64)
        return children[int(torch.multinomial(torch.softmax(logits, 0), 1, generator=g))]

    def _backup(self, path: list[_Node]) -> None:
        """Soft Bellman backup from the bottom of ``path`` (and of the chain a rollout hung under it) to the root."""
        node = path[-1]
        while node.children:  # down the new chain to its x0
            node = node.children[-1]
        chain = []
        while node is not None:
            chain.append(node)
            node = node.parent
        for n in chain:
            if n.done:
                continue
            vals = [c.value for c in n.children if c.known]
            if vals:
                n.value, n.known = _logmeanexp(vals, self.lam), True

    # -- reading the tree ---------------------------------------------------------------------------------------

    def _walk(self, root: _Node, g: torch.Generator) -> _Node:
        """Alg. 2: a sample from the tree, children drawn by exp(lambda v); no model call."""
        node = root
        while not node.done:
            node = self._choose_boltzmann([c for c in node.children if c.known], g)
        return node

    def _choose_boltzmann(self, children: list[_Node], g: torch.Generator) -> _Node:
        logits = torch.tensor([self.lam * c.value for c in children], dtype=torch.float64)
        return children[int(torch.multinomial(torch.softmax(logits, 0), 1, generator=g))]

    def _reach(self, root: _Node) -> dict[int, float]:
        """The probability that Alg. 2's walk ends at each x0."""
        out, stack = {}, [(root, 1.0)]
        while stack:
            node, p = stack.pop()
            if node.done:
                out[id(node)] = out.get(id(node), 0.0) + p
                continue
            kids = [c for c in node.children if c.known]
            w = torch.softmax(torch.tensor([self.lam * c.value for c in kids], dtype=torch.float64), 0).tolist()
            stack += [(c, p * wi) for c, wi in zip(kids, w, strict=True)]
        return out

    def _nodes(self, root: _Node):
        stack = [root]
        while stack:
            n = stack.pop()
            yield n
            stack += n.children
