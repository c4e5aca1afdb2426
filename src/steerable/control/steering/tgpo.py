"""TGPO-style plan search on STLNav (Meng, Chen and Fan, "TGPO", 2025; the repository holds only a README,
so this follows the paper's text).

STLNav's task phi (region A within 60 steps, then the goal by 100, never an
obstacle) decomposes into two timed subgoals, A then the goal. A *time
allocation* tau = (t_A, t_G) assigns each its deadline. Three parts:

- a **time-conditioned policy** pi(a | s, subgoal, time left): the room's
  chunked diffusion policy whose observation is (x, y, vx, vy, subgoal x,
  subgoal y, steps left to the subgoal's deadline). At stage 0 the subgoal is
  A's centre with deadline t_A; once A is visited, the goal with deadline t_G.
- a **critic** V(s0, tau): the probability that a rollout of the policy from
  s0 under tau satisfies phi, fitted (cross-entropy) to rollouts under random
  allocations (:func:`collect`, :func:`train_critic`).
- **search over tau** at the start of each episode: ``random`` (one
  allocation drawn from the prior, the baseline), ``bon`` (best of N drawn
  allocations by V: the search room's BestOfN over an :class:`AllocationProcess`
  with a :class:`CriticScorer`) or ``mh`` (Metropolis-Hastings over tau with
  target exp(V / T), N proposals, the best visited state kept).

Where it differs from the paper, and why: the low-level policy is trained by
behaviour cloning on hindsight-relabelled demonstrations (each row's subgoal
is a point its own episode reached k steps later, its time left k) rather
than by PPO on a dense stage-wise reward: our policies are diffusion policies
trained offline, and PPO over 100-step episodes does not fit this CPU budget.
The critic is trained on rollouts of that fixed policy (the paper trains both
together, exploring tau with critic-guided MH: TGPO*).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from steerable.config import check, opt
from steerable.control.policies.critics import AllocationCritic
from steerable.control.steering.controller import Controller
from steerable.control.worlds.envs import STLNav
from steerable.errors import ConfigError
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, no_answer, require
from steerable.search.best_of_n import BestOfN
from steerable.search.result import Candidate, Result
from steerable.streams import stream
from steerable.usage import Usage

SUB_DIM = 7  # (x, y, vx, vy, subgoal x, subgoal y, steps left)


def subgoal_obs(env: STLNav, tau: tuple[int, int], obs: np.ndarray) -> np.ndarray:
    """The time-conditioned policy's observation at ``env``'s state under allocation ``tau`` = (t_A, t_G)."""
    if env.visited_at is None:
        target, deadline = env.spec.region[:2], tau[0]
    else:
        target, deadline = env.goal, tau[1]
    left = max(1, deadline - env.t)  # a missed deadline means "now"
    return np.array([*obs[:4], *target, left], np.float32)


# ---------------------------------------------------------------- allocations and their critic
@dataclass(frozen=True)
class Allocations:
    """The prior over tau: t_A uniform in [a_min, a_max], then t_G uniform in [t_A + gap, horizon]."""

    a_min: int = 10
    a_max: int = 60
    gap: int = 15
    horizon: int = 100

    def sample(self, rng: np.random.Generator) -> tuple[int, int]:
        a = int(rng.integers(self.a_min, self.a_max + 1))
        return a, int(rng.integers(a + self.gap, self.horizon + 1))

    def clip(self, a: float, g: float) -> tuple[int, int]:
        a = int(round(min(max(a, self.a_min), self.a_max)))
        return a, int(round(min(max(g, a + self.gap), self.horizon)))


# ---------------------------------------------------------------- search over tau
@dataclass
class AllocState:
    taus: list[tuple[int, int]]
    seeds: list[int]  # each row's stream for its draw from the prior
    obs0: np.ndarray  # the condition: the episode's start observation


@dataclass
class AllocationProcess:
    """Allocations as a one-step process conditioned on the episode's start observation s0 (``Process[ndarray]``):
    ``init`` makes n empty rows, ``propose`` draws each row's tau from the prior (row r from its own stream), so
    any search strategy can choose among them and a scorer reads s0 from the condition."""

    prior: Allocations = field(default_factory=Allocations)
    _usage: Usage = field(default_factory=Usage, init=False, repr=False)

    @property
    def usage(self) -> Usage:
        return self._usage

    def start_run(self) -> None:
        pass

    def init(self, cond: np.ndarray, n: int, seed: int | None = None) -> AllocState:
        seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else seed
        return AllocState([(-1, -1)] * n, [stream(seed, r) & ((1 << 63) - 1) for r in range(n)], np.asarray(cond))

    def propose(self, state: AllocState) -> None:
        state.taus = [t if t[0] >= 0 else self.prior.sample(np.random.default_rng(s))
                      for t, s in zip(state.taus, state.seeds, strict=True)]  # fmt: skip

    def is_terminal(self, state: AllocState) -> list[bool]:
        return [t[0] >= 0 for t in state.taus]

    def select(self, state: AllocState, rows: Sequence[int]) -> AllocState:
        return AllocState([state.taus[r] for r in rows], [state.seeds[r] for r in rows], state.obs0)

    def concat(self, states: Sequence[AllocState]) -> AllocState:
        cat = lambda f: [x for s in states for x in getattr(s, f)]  # noqa: E731
        return AllocState(cat("taus"), cat("seeds"), states[0].obs0)

    def size(self, state: AllocState) -> int:
        return len(state.taus)

    def preview(self, state: AllocState) -> list[tuple[int, int]]:
        return list(state.taus)


@dataclass
class CriticScorer:
    """Scores allocations by V(s0, tau), s0 each allocation's condition (its episode's start observation)."""

    critic: AllocationCritic
    range: tuple[float, float] = (0.0, 1.0)
    calls: int = 0
    forward_tokens: int = 0

    def score(self, conds: Sequence[np.ndarray], samples: Sequence[tuple[int, int]]) -> list[float]:
        self.calls += len(samples)
        return self.critic.prob(np.stack([np.asarray(c, np.float32) for c in conds]), samples).tolist()


@dataclass(frozen=True)
class MetropolisHastings:
    """MH over tau with target exp(V(tau) / temperature): a Gaussian random walk (``step`` steps wide on each
    deadline, then clipped to the prior's support), ``budget`` proposals; returns the best state visited."""

    prior: Allocations = field(default_factory=Allocations)
    temperature: float = opt(0.05, "T of the target exp(V / T).", gt=0, le=100)
    step: float = opt(8.0, "Random-walk std of each deadline, in steps.", gt=0, le=100)
    extract: Extract = no_answer
    name = "mh"

    def __post_init__(self) -> None:
        check(self, "mh: ")

    def run(self, process, scorer: Scorer, budget: int, cond: np.ndarray, seed: int | None = None) -> Result:
        require(budget, scorer, self.name)
        meter = Meter(process, scorer)
        seed = 0 if seed is None else seed
        state = process.init(cond, 1, seed)
        process.propose(state)
        cur = process.preview(state)[0]
        v = checked_scores(scorer, [cond], [cur])[0]
        rng = np.random.default_rng(stream(seed, 3) & ((1 << 63) - 1))
        visited, accepted = [(cur, v)], 0
        for _ in range(budget - 1):
            prop = self.prior.clip(cur[0] + rng.normal(0, self.step), cur[1] + rng.normal(0, self.step))
            pv = checked_scores(scorer, [cond], [prop])[0]
            if math.log(rng.uniform() + 1e-300) < (pv - v) / self.temperature:
                cur, v, accepted = prop, pv, accepted + 1
            visited.append((prop, pv))
        pick = max(range(len(visited)), key=lambda i: visited[i][1])
        cands = tuple(Candidate(t, None, s, float(i == pick)) for i, (t, s) in enumerate(visited))
        info = {"accepted": accepted}
        return Result(self.name, budget, visited[pick][0], None, cands, meter.cost(), info)


# ---------------------------------------------------------------- acting
@dataclass
class TGPO(Controller):
    """The time-conditioned policy under an allocation chosen at the start of each episode (``search``: random,
    bon or mh over ``budget`` allocations scored by the critic)."""

    critic: AllocationCritic | None = None
    search: Literal["random", "bon", "mh"] = opt(
        "bon", "random (one allocation from the prior), bon or mh over allocations scored by V."
    )
    budget: int = opt(16, "Allocations scored per episode (the budget).", ge=1, le=100_000)
    prior: Allocations = field(default_factory=Allocations)
    name = "tgpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.policy.obs_dim != SUB_DIM or self.policy.history or self.policy.past:
            raise ConfigError("tgpo needs the time-conditioned policy of `steerable control tgpo` (7-dim, no history)")
        if self.search != "random" and self.critic is None:
            raise ConfigError(f"tgpo {self.search} scores allocations: pass the critic (`steerable control tgpo`)")
        self.alloc = AllocationProcess(self.prior)
        self.scorer = CriticScorer(self.critic) if self.critic is not None else None
        self.chosen: dict[int, tuple[np.ndarray, tuple[int, int], float]] = {}  # episode seed -> (s0, tau, V)
        self.strategy = BestOfN() if self.search == "bon" else MetropolisHastings(self.prior)

    def reset(self, seeds: list[int]) -> None:
        super().reset(seeds)
        self.tau: list[tuple[int, int] | None] = [None] * len(seeds)

    def choose(self, row: int, obs0: np.ndarray) -> tuple[int, int]:
        """The row's allocation, chosen once at its episode's start (recorded in ``chosen`` by episode seed)."""
        seed = stream(self.seeds[row], 99)
        value = math.nan
        if self.search == "random":
            state = self.alloc.init(obs0, 1, seed)
            self.alloc.propose(state)
            tau = self.alloc.preview(state)[0]
        else:
            res = self.strategy.run(self.alloc, self.scorer, self.budget, obs0, seed)
            self.scorer_calls[row] += res.cost.scorer_calls
            tau, value = res.sample, max(c.score for c in res.candidates)
        self.chosen[self.seeds[row]] = (np.asarray(obs0), tau, value)
        return tau

    def act(self, rows: list[int], seen: list[list[np.ndarray]], envs) -> dict[int, np.ndarray]:
        if not all(isinstance(envs[r], STLNav) for r in rows):
            raise ConfigError("tgpo plans STLNav's subgoals: run it with --env builtin:stlnav")
        for r in rows:
            if self.tau[r] is None:
                self.tau[r] = self.choose(r, seen[r][0])
        # the policy sees (state, subgoal, time left) instead of the env's observation (history 0: one frame)
        view = {r: [subgoal_obs(envs[r], self.tau[r], seen[r][-1])] for r in rows}
        chunks = self.policy.future(self._sample(rows, view)[:, 0])
        return {r: self._run(r, chunks[i]) for i, r in enumerate(rows)}
