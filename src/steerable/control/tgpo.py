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

import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from steerable.config import check, opt
from steerable.control.controllers import Controller
from steerable.control.data import Dataset
from steerable.control.envs import STLNav
from steerable.control.normalize import ObsScale
from steerable.diffusion.noise import mix
from steerable.errors import ConfigError, InputError
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, no_answer, require
from steerable.search.best_of_n import BestOfN
from steerable.search.result import Candidate, Result
from steerable.usage import Usage

SUB_DIM = 7  # (x, y, vx, vy, subgoal x, subgoal y, steps left)


# ---------------------------------------------------------------- the time-conditioned policy's data
def relabel(data: Dataset, per_episode: int = 6, seed: int = 0, min_gap: int = 4) -> Dataset:
    """Hindsight relabelling: for each episode and each of ``per_episode`` drawn times k (before any collision),
    a pseudo-episode of rows 0..k-1 whose observation is (x, y, vx, vy, pos_k, k - t): reach the point the
    episode reached at k, in the k - t steps it took. Actions are unchanged."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
    episode, n = [], 0
    for sl in data.episode_slices():
        obs, act, term = data.obs[sl], data.action[sl], data.terminated[sl]
        nxt = data.next_obs[sl]
        length = len(obs)
        # the last safe time: an episode that ended in a collision (negative terminal reward) stops before it
        last = length - 1 if (term[-1] and data.reward[sl][-1] < -0.5) else length
        if last < min_gap:
            continue
        for k in rng.integers(min_gap, last + 1, size=per_episode):
            target = nxt[k - 1, :2]  # the position reached after k steps
            left = (k - np.arange(k)).astype(np.float32)[:, None]
            o = np.concatenate([obs[:k, :4], np.repeat(target[None], k, 0), left], axis=1)
            o2 = np.concatenate([nxt[:k, :4], np.repeat(target[None], k, 0), left - 1], axis=1)
            cols["obs"].append(o)
            cols["next_obs"].append(o2)
            cols["action"].append(act[:k])
            cols["reward"].append(np.zeros(k, np.float32))
            cols["terminated"].append(np.zeros(k, bool))
            cols["truncated"].append(np.r_[np.zeros(k - 1, bool), True])
            episode.append(np.full(k, n, np.int64))
            n += 1
    if n == 0:
        raise InputError("relabel: no episode is long enough to relabel")
    return Dataset(
        **{k: np.concatenate(v).astype(np.float32 if k in ("obs", "next_obs", "action", "reward") else bool)
           for k, v in cols.items()},
        episode=np.concatenate(episode),
        kind=np.asarray(["relabelled"] * n),
        success=np.ones(n, bool),
    )  # fmt: skip


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


class AllocationCritic(nn.Module):
    """V(s0, tau) = P(phi satisfied | start observation, allocation), an MLP on (normalised s0, tau / horizon)."""

    def __init__(self, obs_scale: ObsScale, width: int = 128, depth: int = 2, horizon: int = 100) -> None:
        super().__init__()
        self.obs_scale, self.width, self.depth, self.horizon = obs_scale, width, depth, horizon
        d, layers = len(obs_scale.mean) + 2, []
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.LayerNorm(width), nn.ReLU()]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, 1))

    def logit(self, obs0: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.obs_scale(obs0), tau.float() / self.horizon], dim=1)).squeeze(-1)

    def prob(self, obs0: np.ndarray, taus: Sequence[tuple[int, int]]) -> np.ndarray:
        o = torch.as_tensor(np.repeat(np.asarray(obs0, np.float32)[None], len(taus), 0))
        with torch.no_grad():
            return torch.sigmoid(self.logit(o, torch.as_tensor(np.asarray(taus)))).double().numpy()

    def save(self, out, record: dict | None = None) -> None:
        from pathlib import Path

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, out / "allocation_critic.safetensors")
        head = {"kind": "allocation-critic", "width": self.width, "depth": self.depth, "horizon": self.horizon,
                "obs_scale": self.obs_scale.to_dict()}  # fmt: skip
        (out / "allocation_critic.json").write_text(json.dumps(head, indent=2) + "\n")
        if record is not None:
            (out / "critic_training.json").write_text(json.dumps(record, indent=2) + "\n")

    @classmethod
    def load(cls, path) -> AllocationCritic:
        from pathlib import Path

        path = Path(path)
        try:
            h = json.loads((path / "allocation_critic.json").read_text())
        except FileNotFoundError:
            raise InputError(f"no allocation critic at {path}: train one with `steerable control tgpo`") from None
        critic = cls(ObsScale.from_dict(h["obs_scale"]), h["width"], h["depth"], h["horizon"])
        critic.load_state_dict(load_file(path / "allocation_critic.safetensors"))
        return critic.eval()


# ---------------------------------------------------------------- search over tau
@dataclass
class AllocState:
    taus: list[tuple[int, int]]
    prompt: str


@dataclass
class AllocationProcess:
    """Allocations as a one-step process: ``init`` makes n empty rows, ``propose`` draws each row's tau from the
    prior (row r from its own stream), so any search strategy can choose among them."""

    prior: Allocations = field(default_factory=Allocations)
    _usage: Usage = field(default_factory=Usage, init=False, repr=False)

    @property
    def usage(self) -> Usage:
        return self._usage

    def start_run(self) -> None:
        pass

    def init(self, prompt: str, n: int, seed: int | None = None) -> AllocState:
        seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else seed
        self._seeds = [mix(seed, r) & ((1 << 63) - 1) for r in range(n)]
        return AllocState([(-1, -1)] * n, prompt)

    def propose(self, state: AllocState) -> None:
        state.taus = [self.prior.sample(np.random.default_rng(s)) for s in self._seeds[: len(state.taus)]]

    def is_terminal(self, state: AllocState) -> list[bool]:
        return [t[0] >= 0 for t in state.taus]

    def select(self, state: AllocState, rows: Sequence[int]) -> AllocState:
        return AllocState([state.taus[r] for r in rows], state.prompt)

    def concat(self, states: Sequence[AllocState]) -> AllocState:
        return AllocState([t for s in states for t in s.taus], states[0].prompt)

    def size(self, state: AllocState) -> int:
        return len(state.taus)

    def preview(self, state: AllocState) -> list[tuple[int, int]]:
        return list(state.taus)


@dataclass
class CriticScorer:
    """Scores allocations by V(s0, tau) for the start observation ``obs0`` (set per episode)."""

    critic: AllocationCritic
    obs0: np.ndarray | None = None
    range: tuple[float, float] = (0.0, 1.0)
    calls: int = 0
    forward_tokens: int = 0

    def score(self, prompts: Sequence[str], samples: Sequence[tuple[int, int]]) -> list[float]:
        self.calls += len(samples)
        return self.critic.prob(self.obs0, samples).tolist()


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

    def run(self, process, scorer: Scorer, budget: int, prompt: str, seed: int | None = None) -> Result:
        require(budget, scorer, self.name)
        meter = Meter(process, scorer)
        seed = 0 if seed is None else seed
        state = process.init(prompt, 1, seed)
        process.propose(state)
        cur = process.preview(state)[0]
        v = checked_scores(scorer, [prompt], [cur])[0]
        rng = np.random.default_rng(mix(seed, 3) & ((1 << 63) - 1))
        visited, accepted = [(cur, v)], 0
        for _ in range(budget - 1):
            prop = self.prior.clip(cur[0] + rng.normal(0, self.step), cur[1] + rng.normal(0, self.step))
            pv = checked_scores(scorer, [prompt], [prop])[0]
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
    search: str = "bon"
    budget: int = 16
    prior: Allocations = field(default_factory=Allocations)
    name = "tgpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.policy.obs_dim != SUB_DIM or self.policy.history or self.policy.past:
            raise ConfigError("tgpo needs the time-conditioned policy of `steerable control tgpo` (7-dim, no history)")
        if self.search not in ("random", "bon", "mh"):
            raise ConfigError(f"tgpo: search must be random, bon or mh (got {self.search!r})")
        if self.search != "random" and self.critic is None:
            raise ConfigError(f"tgpo {self.search} scores allocations: pass the critic (`steerable control tgpo`)")
        self.alloc = AllocationProcess(self.prior)
        self.chosen: dict[int, tuple[np.ndarray, tuple[int, int], float]] = {}  # episode seed -> (s0, tau, V)
        self.strategy = BestOfN() if self.search == "bon" else MetropolisHastings(self.prior)

    def reset(self, seeds: list[int]) -> None:
        super().reset(seeds)
        self.tau: list[tuple[int, int] | None] = [None] * len(seeds)

    def choose(self, row: int, obs0: np.ndarray) -> tuple[int, int]:
        """The row's allocation, chosen once at its episode's start (recorded in ``chosen`` by episode seed)."""
        seed = mix(self.seeds[row], 99)
        value = math.nan
        if self.search == "random":
            state = self.alloc.init("tgpo", 1, seed)
            self.alloc.propose(state)
            tau = self.alloc.preview(state)[0]
        else:
            res = self.strategy.run(self.alloc, CriticScorer(self.critic, obs0), self.budget, "tgpo", seed)
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


# ---------------------------------------------------------------- training: policy, rollouts, critic
@dataclass(frozen=True)
class TGPOConfig:
    """How ``steerable control tgpo`` trains the time-conditioned policy and the allocation critic."""

    data: str = opt(..., "PointNav dataset .npz (from `steerable control data`), relabelled with subgoals.")
    out: str = opt(..., "Directory for the policy (out/policy) and the allocation critic (out/critic).")
    minutes: float = opt(5.0, "Policy training wall time.", gt=0, le=24 * 60)
    steps: int | None = opt(None, "Exact policy training steps (overrides --minutes).", ge=1, le=10_000_000)
    relabels: int = opt(6, "Relabelled copies per demonstration.", ge=1, le=100)
    rollouts: int = opt(1500, "Episodes under random allocations to fit the critic on.", ge=10, le=1_000_000)
    critic_steps: int = opt(3000, "Critic gradient steps.", ge=1, le=1_000_000)
    seed: int = opt(0, "Seed.", ge=0)
    threads: int = opt(1, "torch threads.", ge=1, le=256)

    def __post_init__(self) -> None:
        check(self, "tgpo: ")


def collect(policy, episodes: int, seed: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s0 [n, 6], tau [n, 2], satisfied [n]) of rollouts of the policy under random allocations."""
    from steerable.control.evaluate import evaluate

    ctl = TGPO(policy, search="random")
    eps = evaluate(STLNav(), ctl, episodes, seed, progress=progress)
    rows = [ctl.chosen[mix(seed, e.index)] for e in eps]
    return (
        np.stack([r[0] for r in rows]),
        np.asarray([r[1] for r in rows]),
        np.asarray([bool(e.satisfied) for e in eps]),
    )


def train_critic(obs0, taus, sat, steps: int, seed: int, check_every: int = 25) -> tuple[AllocationCritic, dict]:
    """Cross-entropy fit of V(s0, tau) to satisfaction, early-stopped: 10% of the rollouts are held out and the
    weights with the lowest held-out loss (checked every ``check_every`` steps) are kept. Measured on STLNav's
    1,500 rollouts: 300 steps 0.566 held-out BCE, 3,000 steps 1.04 (the base rate's is 0.664): it overfits."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(sat))
    held, fit = idx[: max(1, len(idx) // 10)], idx[max(1, len(idx) // 10) :]
    if len(fit) == 0:
        raise InputError(f"tgpo: {len(sat)} rollouts leave none to fit the critic on: collect more")
    critic = AllocationCritic(ObsScale.fit(obs0[fit]))
    o, t, y = (torch.as_tensor(a) for a in (obs0.astype(np.float32), taus, sat.astype(np.float32)))
    opt_ = torch.optim.Adam(critic.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    h = torch.as_tensor(held)

    def held_loss() -> float:
        critic.eval()
        with torch.no_grad():
            out = float(loss_fn(critic.logit(o[h], t[h]), y[h]))
        critic.train()
        return out

    best = (held_loss(), 0, {k: v.clone() for k, v in critic.state_dict().items()})
    for step in range(1, steps + 1):
        i = torch.as_tensor(rng.choice(fit, size=min(256, len(fit))))
        loss = loss_fn(critic.logit(o[i], t[i]), y[i])
        opt_.zero_grad(set_to_none=True)
        loss.backward()
        opt_.step()
        if step % check_every == 0 or step == steps:
            cur = held_loss()
            if cur < best[0]:
                best = (cur, step, {k: v.clone() for k, v in critic.state_dict().items()})
    critic.load_state_dict(best[2])
    critic.eval()
    base = float(y[h].mean())
    prior_loss = -(base * math.log(base) + (1 - base) * math.log(1 - base)) if 0 < base < 1 else math.nan
    return critic, {
        "held_out_bce": round(best[0], 4),
        "held_out_bce_of_the_base_rate": round(prior_loss, 4),
        "kept_step": best[1],
    }


def train_tgpo(cfg: TGPOConfig, progress: bool = True) -> dict:
    from pathlib import Path

    from steerable.control.normalize import ActionScale
    from steerable.control.policy import PolicyConfig, train_policy

    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    data = relabel(Dataset.load(cfg.data), cfg.relabels, cfg.seed)
    pcfg = PolicyConfig(
        data=cfg.data,
        out=str(Path(cfg.out) / "policy"),
        env="builtin:stlnav",
        minutes=cfg.minutes,
        steps=cfg.steps,
        seed=cfg.seed,
        threads=cfg.threads,
    )
    policy, record = train_policy(pcfg, data, ActionScale((-1.0, -1.0), (1.0, 1.0)), progress)
    cli = sys.argv[1:3] == ["control", "tgpo"]
    record["command"] = "steerable control tgpo " + " ".join(sys.argv[3:]) if cli else ""
    record["relabelled_pseudo_episodes"] = data.episodes
    policy.save(pcfg.out, record)
    obs0, taus, sat = collect(policy, cfg.rollouts, cfg.seed + 1, progress)
    (Path(cfg.out) / "critic").mkdir(parents=True, exist_ok=True)
    np.savez(Path(cfg.out) / "critic" / "rollouts.npz", obs0=obs0, taus=taus, satisfied=sat)
    critic, fit = train_critic(obs0, taus, sat, cfg.critic_steps, cfg.seed)
    crecord = {
        "config": asdict(cfg),
        "rollouts": int(len(sat)),
        "satisfied_under_random_tau": round(float(sat.mean()), 4),
        **fit,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    critic.save(Path(cfg.out) / "critic", crecord)
    return {"policy_steps": record["steps"], **crecord}
