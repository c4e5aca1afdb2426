"""Lookahead search over action chunks: a search strategy run in forked copies of the environment.

At every control step, a strategy of the search room (``bon``, ``beam``,
``dvts``, ...; :func:`steerable.search.registry.make_strategy`) runs over a
:class:`~steerable.control.steering.process.ControlProcess` with ``rollout``: each
row plans ``depth`` chunks, running each in its own fork of the env (the
state, wind included, but fresh gusts), and is scored by
:class:`~steerable.control.steering.scorers.ReturnToGo`, the discounted reward the
fork collected plus gamma^n V(s_n) from the IQL critic (no value after a
termination). The first chunk of the best plan is executed in the real
episode. This is model-predictive control with the simulator as the model:
its cost is counted in NFE, scorer calls and the env steps run in forks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from steerable.config import opt
from steerable.control.policies.critics import IQLCritic
from steerable.control.policies.normalize import require_same
from steerable.control.steering.controller import Controller
from steerable.control.steering.process import ControlProcess
from steerable.control.steering.scorers import ReturnToGo
from steerable.errors import ConfigError
from steerable.search.base import no_answer
from steerable.search.registry import UNSCORED, make_strategy


@dataclass
class Lookahead(Controller):
    critic: IQLCritic | None = None
    strategy: str = opt("bon", "The search strategy over plans (bon, beam, dvts, pf, ...).", min_len=1)
    budget: int = opt(8, "The strategy's budget (plans; the budget).", ge=1, le=1024)
    depth: int = opt(2, "Chunks each plan looks ahead, each run in its env fork.", ge=1, le=64)
    gamma: float = opt(0.99, "Discount of the plan's return r_0 + gamma r_1 + ... + gamma^n V(s_n).", gt=0, le=1)
    peek: bool = opt(False, "Forks keep the real episode's random stream (clairvoyant; for ablations).")
    name = "search"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critic is None:
            raise ConfigError("search scores plans by r + gamma^n V: --set critic=DIR (`steerable control train-q`)")
        if self.strategy in UNSCORED:
            raise ConfigError(f"search: {self.strategy} uses no scorer; use bon, beam, dvts or another scored one")
        require_same(self.policy.action_scale, self.critic.action_scale, "search")
        self.search = make_strategy(self.strategy, no_answer)
        self.process = ControlProcess(
            self.policy, depth=self.depth, rollout=True, execute=self.execute, eta=self.eta, peek=self.peek
        )
        self.scorer = ReturnToGo(self.critic, self.gamma)

    def act(self, rows: list[int], seen: list[list[np.ndarray]], envs) -> dict[int, np.ndarray]:
        out = {}
        for r in rows:
            res = self._search(r, seen, envs, self.search, self.scorer, self.budget, self.process)
            out[r] = self._run(r, self.policy.future(res.sample.chunks[0][None])[0])
        return out
