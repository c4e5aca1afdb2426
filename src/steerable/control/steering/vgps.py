"""V-GPS: value-guided policy steering (Nakamoto, Mees, Kumar and Levine, "Steering Your Generalists", CoRL 2024).

At every control step sample K action chunks from the (frozen) policy, score
each by the critic, and execute the argmax, or (``beta`` > 0) a chunk drawn
from softmax(Q / beta), as the authors' ``get_vgps_action`` does
(``jax.random.categorical(values / action_temp)``; temperature 0 is argmax).
The paper's critic scores the first action of each chunk; an
:class:`~steerable.control.policies.critics.IQLCritic` trained with ``--chunk H`` scores the
whole chunk instead (it says which in ``critic.chunk``). The policy and the
critic must normalise actions alike (:func:`~steerable.control.policies.normalize.require_same`):
the authors' code normalises them differently. Cost per control step: K
policy samples (K x DDIM steps NFE) and K critic calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from steerable.config import check, opt
from steerable.control.policies.critics import IQLCritic
from steerable.control.policies.normalize import require_same
from steerable.control.steering.controller import Controller
from steerable.control.steering.process import ControlProcess
from steerable.control.steering.scorers import QScorer
from steerable.errors import ConfigError
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, no_answer, require, run_to_end
from steerable.search.best_of_n import BestOfN
from steerable.search.process import C, Process
from steerable.search.result import Candidate, Result
from steerable.streams import stream


@dataclass(frozen=True)
class SoftmaxOfN:
    """Sample N, then draw one with probability softmax(score / beta) (V-GPS's ``action_temp``).

    The draw comes from its own stream, ``stream(seed, 7)``, so a run is a function of its seed.
    """

    beta: float = opt(1.0, "Temperature of the softmax over scores.", gt=0.0, le=1e6)
    extract: Extract = no_answer
    name = "softmax-of-n"

    def __post_init__(self) -> None:
        check(self, f"{self.name}: ")

    def run(self, process: Process, scorer: Scorer, budget: int, cond: C, seed: int | None = None) -> Result:
        require(budget, scorer, self.name)
        meter = Meter(process, scorer)
        seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else seed
        samples = process.preview(run_to_end(process, process.init(cond, budget, seed)))
        scores = checked_scores(scorer, [cond] * len(samples), samples)
        w = torch.softmax(torch.tensor(scores, dtype=torch.float64) / self.beta, 0)
        g = torch.Generator().manual_seed(stream(seed, 7) & ((1 << 63) - 1))
        pick = int(torch.multinomial(w, 1, generator=g))
        cands = tuple(
            Candidate(t, self.extract(t), s, float(w[i])) for i, (t, s) in enumerate(zip(samples, scores, strict=True))
        )
        return Result(self.name, budget, samples[pick], cands[pick].answer, cands, meter.cost())


@dataclass
class VGPS(Controller):
    """Best-of-K chunks by the critic: the search room's :class:`~steerable.search.best_of_n.BestOfN` (or
    :class:`SoftmaxOfN` with ``beta`` > 0) over a one-chunk :class:`ControlProcess` with a :class:`QScorer`."""

    critic: IQLCritic | None = None
    k: int = opt(8, "Chunks sampled per control step (K, the budget).", ge=1, le=1024)
    beta: float = opt(0.0, "Softmax temperature over Q (0: argmax).", ge=0, le=1e6)
    name = "vgps"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critic is None:
            raise ConfigError("vgps needs a critic: train one with `steerable control train-q`, --set critic=DIR")
        if self.critic.chunk > self.policy.horizon:
            raise ConfigError(
                f"vgps: the critic scores {self.critic.chunk} actions, the policy plans only {self.policy.horizon}"
            )
        require_same(self.policy.action_scale, self.critic.action_scale, "vgps")
        self.process = ControlProcess(self.policy, eta=self.eta)
        self.scorer = QScorer(self.critic, self.policy)
        self.strategy = BestOfN() if self.beta == 0 else SoftmaxOfN(beta=self.beta)
        self.last_q: np.ndarray | None = None  # [rows, K] the critic's scores at the last step (for tests)

    def act(self, rows: list[int], seen: list[list[np.ndarray]], envs) -> dict[int, np.ndarray]:
        out, qs = {}, []
        for r in rows:
            res = self._search(r, seen, envs, self.strategy, self.scorer, self.k, self.process)
            qs.append([c.score for c in res.candidates])
            out[r] = self._run(r, self.policy.future(res.sample.chunks[0][None])[0])
        self.last_q = np.array(qs)
        return out
