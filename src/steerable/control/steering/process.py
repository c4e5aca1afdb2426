"""The control process: a step is one action chunk of the diffusion policy; rows are forks of the environment.

Search strategies (best-of-N, beam search, particle filtering, ...) see a
control policy through the same :class:`~steerable.search.process.Process`
interface as a language model or a diffusion sampler. Its condition is a
:class:`Root`: the episode's env, the observations seen so far and the actions
executed so far, given to ``init`` (``strategy.run(process, scorer, budget,
root, seed)``) and, with every plan, to the scorer. Each row is one plan from
the root. ``propose`` samples one chunk for every live row, all rows in one batched
denoiser call per DDIM step, each from its own noise stream; with
``rollout`` the row's own fork of the env (``env.clone()``) then runs the
chunk's first ``execute`` actions, so the next chunk is planned from where
that one led. ``preview`` gives each row's :class:`Plan` (the sample a scorer
judges); ``select`` forks rows (a repeated row gets its own env copy).

A fork is the simulator's exact state, so by default its random stream
(gusts) is re-seeded from the row's stream: a search may know the env's
dynamics and its unobserved per-episode wind (part of the state it forks),
but cannot read the real episode's future random draws. ``peek=True`` keeps
the root's stream (a clairvoyant search, for ablations).

Cost, in ``usage``: ``nfe`` (denoiser evaluations, as the policy's sampling
process counts them) and ``env_steps`` (steps run in forks, counted as they
run; the real episode's steps are counted by the evaluation, not here). Scorer calls are counted by the
scorers (:mod:`steerable.control.steering.scorers`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from steerable.control.policies.diffusion_policy import DiffusionPolicy
from steerable.errors import ConfigError, InputError
from steerable.streams import forks, stream
from steerable.usage import Usage


@dataclass(frozen=True)
class Plan:
    """One row's sample: the chunks it planned from the root and, with rollout, what they did in its fork."""

    obs: np.ndarray  # the root observation (where the first chunk was planned)
    chunks: tuple[torch.Tensor, ...]  # normalised samples [past+H, act_dim], predicted past included
    executed: tuple[np.ndarray, ...]  # env actions the episode had executed before the root
    rewards: tuple[float, ...] = ()  # each env step's reward in the fork (rollout only)
    last_obs: np.ndarray | None = None  # the fork's observation after its steps (rollout only)
    done: bool = False  # the fork's episode ended (terminated or truncated)
    terminated: bool = False  # ended by termination (goal, collision): no value after it

    @property
    def steps(self) -> int:
        return len(self.rewards)

    @property
    def ret(self) -> float:
        return float(sum(self.rewards))


@dataclass(frozen=True, eq=False)
class Root:
    """A control process's condition: where an episode stands when a search starts (compared by identity)."""

    env: object  # the episode's env (only cloned, never stepped)
    seen: tuple[np.ndarray, ...]  # observations so far, the current one last
    executed: tuple[np.ndarray, ...] = ()  # env actions executed so far

    @classmethod
    def of(cls, env: object, seen, executed=()) -> Root:
        return cls(env, tuple(seen), tuple(executed))


@dataclass
class ControlState:
    root: Root
    streams: list[int]  # each row's noise stream
    plans: list[Plan]
    envs: list[object | None]  # each row's fork (rollout only)
    seen: list[list[np.ndarray]]  # each row's observations (root's, then its fork's)
    queries: list[int] = field(default_factory=list)  # chunks sampled per row


def fork(env, stream: int | None):
    """An independent copy of ``env``; ``stream`` re-seeds its random draws (None keeps the root's)."""
    out = env.clone() if hasattr(env, "clone") else copy.deepcopy(env)
    if stream is not None and hasattr(out, "reseed"):
        out.reseed(stream & ((1 << 63) - 1))
    return out


@dataclass
class ControlProcess:
    """A diffusion policy as a step-wise process over action chunks (see the module docstring)."""

    policy: DiffusionPolicy
    depth: int = 1  # chunks per plan
    rollout: bool = False  # run each chunk in the row's fork (needed for depth > 1)
    execute: int | None = None  # actions of a chunk run in the fork (None: the policy's own)
    eta: float = 0.0
    peek: bool = False  # forks keep the root's random stream (clairvoyant)
    _forks: Usage = field(default_factory=Usage, init=False, repr=False)  # env steps run in forks

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ConfigError(f"control process: depth must be >= 1 (got {self.depth})")
        if self.depth > 1 and not self.rollout:
            raise ConfigError("control process: plans deeper than one chunk need rollout (the next chunk's state)")
        self.proc = self.policy.process(eta=self.eta)

    # -- the Process interface -------------------------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        """The sampling process's denoiser evaluations and the env steps run in forks."""
        return self.proc.usage + self._forks

    def start_run(self) -> None:
        """Nothing to reset: a plan's length is fixed by ``depth``."""

    def init(self, cond: Root, n: int, seed: int | None = None) -> ControlState:
        """``n`` plans from the episode's ``cond`` (the env is only ever cloned)."""
        if not isinstance(cond, Root):
            raise InputError(
                f"a control process is conditioned on a Root (env, seen, executed): got {type(cond).__name__}"
            )
        if n < 1:
            raise InputError(f"a control state needs at least one row (got {n})")
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        root = cond
        streams = [stream(seed, r) for r in range(n)]
        plan = Plan(root.seen[-1], (), tuple(root.executed))
        envs = [fork(root.env, None if self.peek else stream(s, 1)) if self.rollout else None for s in streams]
        return ControlState(root, streams, [plan] * n, envs, [list(root.seen) for _ in range(n)], [0] * n)

    def size(self, state: ControlState) -> int:
        return len(state.plans)

    def is_terminal(self, state: ControlState) -> list[bool]:
        return [p.done or len(p.chunks) >= self.depth for p in state.plans]

    def propose(self, state: ControlState) -> None:
        """One chunk for every live row (one batched denoiser call per DDIM step); with rollout, run it."""
        live = [r for r, t in enumerate(self.is_terminal(state)) if not t]
        if not live:
            return
        p = self.policy
        cond = torch.stack([p.condition(p.frames(state.seen[r])) for r in live])
        streams = [stream(state.streams[r], state.queries[r]) for r in live]
        chunks = p.sample_rows(cond, streams, self.proc)
        k = self.execute or p.execute
        for i, r in enumerate(live):
            state.queries[r] += 1
            plan = state.plans[r]
            plan = replace(plan, chunks=(*plan.chunks, chunks[i]))
            if self.rollout:
                plan = self._run(state, r, plan, p.to_env(p.future(chunks[i : i + 1])[0][:k]))
            state.plans[r] = plan

    def _run(self, state: ControlState, r: int, plan: Plan, actions: np.ndarray) -> Plan:
        env, rewards = state.envs[r], list(plan.rewards)
        obs, term, trunc = state.seen[r][-1], False, False
        for a in actions:
            obs, rew, term, trunc, _ = env.step(a)
            state.seen[r].append(obs)
            rewards.append(float(rew))
            if term or trunc:
                break
        self._forks = self._forks + Usage(env_steps=len(rewards) - plan.steps)
        return replace(plan, rewards=tuple(rewards), last_obs=obs, done=term or trunc, terminated=term)

    def select(self, state: ControlState, rows: Sequence[int]) -> ControlState:
        """A new state of ``rows``: every row gets its own env copy; a repeated row's later copies branch their
        noise stream (and, unless ``peek``, their fork's random draws) off the first's."""
        rows = list(rows)
        if not rows:
            raise InputError("select needs at least one row")
        if min(rows) < 0 or max(rows) >= len(state.plans):
            raise InputError(f"row index out of range for a state of {len(state.plans)} rows: {rows}")
        streams = forks(state.streams, rows, state.queries)
        envs, first = [], set()
        for r, s in zip(rows, streams, strict=True):
            e, copy = state.envs[r], r in first
            first.add(r)
            envs.append(None if e is None else fork(e, stream(s, 1) if copy and not self.peek else None))
        return ControlState(
            state.root,
            streams,
            [state.plans[r] for r in rows],
            envs,
            [list(state.seen[r]) for r in rows],
            [state.queries[r] for r in rows],
        )

    def concat(self, states: Sequence[ControlState]) -> ControlState:
        if not states:
            raise InputError("concat needs at least one state")
        if any(s.root is not states[0].root for s in states):
            raise InputError("concat joins states of one root; these were started from different roots")
        return ControlState(
            states[0].root,
            [x for s in states for x in s.streams],
            [x for s in states for x in s.plans],
            [x for s in states for x in s.envs],
            [x for s in states for x in s.seen],
            [x for s in states for x in s.queries],
        )

    def preview(self, state: ControlState) -> list[Plan]:
        return list(state.plans)
