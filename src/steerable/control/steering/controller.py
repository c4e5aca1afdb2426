"""Controllers: what a method does at each control step, over one diffusion policy, for a batch of episodes.

A controller runs B episodes side by side (row r is episode r of the block):
``act(rows, seen, envs)`` gets the rows that need actions, every row's
observations so far and the envs, and returns each row's actions to execute
next. All rows' chunks denoise together, one denoiser call per step, each
row from its own noise stream (``stream(episode seed, query, candidate)``), so an
episode's actions do not depend on which episodes share its batch.

Every controller keeps, per row, what it spent: ``nfe`` (denoiser
evaluations), ``scorer_calls`` (critic or verifier evaluations, one per scored
candidate), ``fork_steps`` (env steps run in forked copies by a lookahead
search) and ``predictions`` (policy queries). Costs are read, never computed:
a batched sample's ``nfe`` is the difference of the sampling process's
``usage`` before and after (split evenly over the rows, which all took the same
steps), a search's is its result's :class:`~steerable.search.result.Cost`.
The base controller samples one chunk and runs ``execute`` of its actions.

Search-like methods (V-GPS, past-token verification, lookahead search) run a
search strategy (:mod:`steerable.search`) over the control process
(:class:`~steerable.control.steering.process.ControlProcess`, a step is one chunk)
at every control step, through :meth:`Controller._search`, conditioned on the
episode's :class:`~steerable.control.steering.process.Root`, and add up the
strategy's :class:`~steerable.search.result.Cost`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from steerable.config import check, opt
from steerable.control.policies.diffusion_policy import DiffusionPolicy
from steerable.control.steering.process import Root
from steerable.streams import stream


@dataclass
class Controller:
    """Base BC: one chunk per query, its first ``execute`` actions run (``execute=None``: the policy's own)."""

    policy: DiffusionPolicy
    execute: int | None = opt(None, "Actions run per prediction (None: the policy's own).", ge=1, le=64)
    eta: float = opt(0.0, "DDIM eta of the policy's sampler (0: a chunk is a function of its noise).", ge=0, le=1)
    name = "base"

    def __post_init__(self) -> None:
        check(self, f"{self.name}: ")
        self.proc = self.policy.process(eta=self.eta)
        self.reset([0])

    def reset(self, seeds: list[int]) -> None:
        """A new block of episodes, one seed each: the seed fixes every sampling draw of its episode."""
        self.seeds = list(seeds)
        n = len(seeds)
        self.query = [0] * n
        self.executed: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.nfe, self.scorer_calls, self.predictions, self.fork_steps = [0] * n, [0] * n, [0] * n, [0] * n

    def _sample(
        self, rows: list[int], seen: list[list[np.ndarray]], n: int = 1, x_init=None, start: int = 0, proc=None
    ):
        """n normalised samples per row: [len(rows), n, past+H, act_dim] (``proc``: another sampler than ``proc``)."""
        p, proc = self.policy, proc or self.proc
        cond = torch.stack([p.condition(p.frames(seen[r])) for r in rows]).repeat_interleave(n, dim=0)
        streams = [stream(self.seeds[r], self.query[r], j) for r in rows for j in range(n)]
        before = proc.usage
        out = p.sample_rows(cond, streams, proc, x_init, start)
        self._charge(rows, (proc.usage - before).nfe)
        return out.reshape(len(rows), n, *p.sample_shape)

    def _charge(self, rows: list[int], nfe: int) -> None:
        """One prediction for each of ``rows``, which shared ``nfe`` denoiser evaluations evenly."""
        for r in rows:
            self.nfe[r] += nfe // len(rows)
            self.predictions[r] += 1
            self.query[r] += 1

    def _search(self, row: int, seen: list[list[np.ndarray]], envs, strategy, scorer, budget: int, process):
        """One run of ``strategy`` over ``process`` from ``row``'s episode as it stands; its cost is the row's."""
        root = Root.of(envs[row], seen[row], self.executed[row])
        res = strategy.run(process, scorer, budget, root, seed=stream(self.seeds[row], self.query[row]))
        self.nfe[row] += res.cost.nfe
        self.scorer_calls[row] += res.cost.scorer_calls
        self.fork_steps[row] += res.cost.env_steps
        self.predictions[row] += 1
        self.query[row] += 1
        return res

    def act(self, rows: list[int], seen: list[list[np.ndarray]], envs) -> dict[int, np.ndarray]:
        chunks = self.policy.future(self._sample(rows, seen)[:, 0])
        return {r: self._run(r, chunks[i]) for i, r in enumerate(rows)}

    def _run(self, row: int, chunk: torch.Tensor, k: int | None = None) -> np.ndarray:
        """Env actions of the first ``k`` (default ``execute``) rows of a normalised chunk; remembered as executed."""
        k = k or self.execute or self.policy.execute
        actions = self.policy.to_env(chunk[:k])
        self.executed[row] += list(actions)
        return actions
