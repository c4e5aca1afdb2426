"""Normalised momentum policy gradients, one trajectory per iteration: N-PG-IGT and (N)-HARPG (Fatkhullin, Barakat,
Kireeva, He, "Stochastic Policy Gradient Methods: Improved Sample Complexity for Fisher-non-degenerate Policies",
ICML 2023), with REINFORCE and STORM-PG (Yuan et al., "Stochastic Recursive Momentum for Policy Gradient
Methods", 2020) beside them at equal trajectories.

Every estimator works on the flat parameter vector theta of a policy and the GPOMDP estimate of the paper,
``g(tau, theta) = grad Phi(tau, theta)`` with ``Phi = sum_t gamma^t (R_t - b_t) log pi_theta(a_t | s_t)``,
``R_t = sum_{h>=t} gamma^(h-t) r_h`` (so ``gamma^t R_t = sum_{h>=t} gamma^h r_h``, the paper's weight) and b a
linear-feature baseline fitted on the previous trajectory (the authors' garage runs use garage's
``LinearFeatureBaseline``; b does not depend on the current trajectory, so g stays unbiased).
Schedules are the authors' garage optimizers' (``NIGT_optimizer.py``, ``STORMHess_optimizer.py``,
``SGDM_optimizer.py``), t counted from 0, with ``gamma_0`` (``step``) and ``eta_0`` (``eta``) free; only the
paper's abstract was readable here, so they are checked against that code, not against its theorems.
Policies are theirs: a softmax MLP (two tanh layers of 32) for CartPole, a Gaussian MLP (two tanh layers of
64, learned state-independent log-std, init std 1) for Pendulum; discount 0.99, horizon 200. Differences from
their code are in ``docs/differences.md``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from steerable.config import check, opt
from steerable.streams import item_seed

ENV_WIDTH = {"CartPole-v1": 32, "Pendulum-v1": 64}  # the authors' hidden widths (softmax / Gaussian MLP)
# gamma_0 (STORM-PG's alpha) per env and method, the best final return of a grid on seed 100 with 1000 trajectories
# (grids and results in docs/results/control.md): Pendulum's returns are ~100x CartPole's, so are its gradients
DEFAULT_STEP = {
    "CartPole-v1": {"reinforce": 1e-2, "storm_pg": 1e-4, "n_pg_igt": 0.3, "harpg": 1e-3, "n_harpg": 0.3},
    "Pendulum-v1": {"reinforce": 1e-5, "storm_pg": 1e-6, "n_pg_igt": 0.3, "harpg": 1e-4, "n_harpg": 0.3},
}
DEFAULT_ETA = {"reinforce": 1.0, "storm_pg": 0.1, "n_pg_igt": 1.0, "harpg": 1.0, "n_harpg": 1.0}


@dataclass(frozen=True)
class PGConfig:
    """How ``steerable control train-pg`` trains a policy by one of the estimators (the CLI's flags are these)."""

    env: Literal["CartPole-v1", "Pendulum-v1"] = opt("CartPole-v1", "The gymnasium env.")
    method: Literal["reinforce", "storm_pg", "n_pg_igt", "harpg", "n_harpg"] = opt("n_pg_igt", "The estimator.")
    trajectories: int = opt(2000, "Trajectories sampled in all (HARPG's second one counts).", ge=1, le=10_000_000)
    step: float | None = opt(
        None, "gamma_0, the step-size scale (default: tuned per env and method, DEFAULT_STEP).", gt=0
    )
    eta: float | None = opt(
        None, "eta_0 of IGT/HARPG's momentum schedule (default 1); STORM-PG's constant eta (default 0.1).", gt=0, le=1
    )
    discount: float = opt(0.99, "Discount gamma of the objective.", gt=0, le=1)
    horizon: int = opt(200, "Steps per trajectory at most (the authors': 200).", ge=1, le=100_000)
    hidden: int = opt(0, "Width of the two tanh hidden layers; 0: the authors' (32 / 64).", ge=0, le=4096)
    eval_every: int = opt(250, "Evaluate every this many trajectories sampled.", ge=1, le=10_000_000)
    eval_episodes: int = opt(10, "Episodes per evaluation (fixed seeds, stochastic policy).", ge=1, le=10_000)
    seed: int = opt(0, "Seed of the initial weights, env resets and actions.", ge=0)
    out: str | None = opt(None, "Write out/pg.json (config, curve, metrics) here.", min_len=1)
    threads: int = opt(1, "torch threads.", ge=1, le=256)

    def __post_init__(self) -> None:
        check(self, "train-pg: ")


class Policy(nn.Module):
    """Softmax (discrete actions) or Gaussian (learned state-independent log-std) over a two-layer tanh MLP;
    ``forward(obs, act)`` is ``log pi(act | obs)`` per step, so ``functional_call`` differentiates it in theta."""

    def __init__(self, obs_dim: int, n_out: int, hidden: int, discrete: bool) -> None:
        super().__init__()
        self.discrete = discrete
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, n_out)
        )
        self.log_std = None if discrete else nn.Parameter(torch.zeros(n_out))

    def dist(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        out = self.net(obs)
        if self.discrete:
            return torch.distributions.Categorical(logits=out)
        return torch.distributions.Normal(out, self.log_std.exp())

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        lp = self.dist(obs).log_prob(act)  # [T] or [T, act_dim]
        return lp if self.discrete else lp.sum(-1)

    def actor(self, horizon: int, gen: torch.Generator):
        """``act(t, obs)`` for one rollout, in numpy (a rollout's hot loop; torch's per-op cost is 10x): the
        weights are read once and the rollout's noise drawn up front from ``gen`` (uniforms for the softmax's
        inverse CDF, standard normals for the Gaussian)."""
        layers = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in self.net if isinstance(m, nn.Linear)]
        n_out = layers[-1][1].shape[0]
        if self.discrete:
            noise = torch.rand(horizon, generator=gen).numpy()
        else:
            noise = torch.randn(horizon, n_out, generator=gen).numpy()
            std = self.log_std.detach().exp().numpy()

        def act(t: int, obs: np.ndarray) -> int | np.ndarray:
            h = np.asarray(obs, np.float32)
            for i, (w, b) in enumerate(layers):
                h = h @ w.T + b
                if i < len(layers) - 1:
                    h = np.tanh(h)
            if not self.discrete:
                return (h + std * noise[t]).astype(np.float32)
            p = np.exp(h - h.max())
            return min(int(np.searchsorted(np.cumsum(p) / p.sum(), noise[t], side="right")), n_out - 1)

        return act


@dataclass
class Trajectory:
    obs: torch.Tensor  # [T, obs_dim]
    act: torch.Tensor  # [T] or [T, act_dim]
    weight: torch.Tensor  # [T]: gamma^t (R_t - b_t), Phi's coefficients
    ret: float  # undiscounted return


class LinearBaseline:
    """garage's LinearFeatureBaseline: ridge regression of R_t on [s, s^2, t/100, (t/100)^2, (t/100)^3, 1]."""

    def __init__(self) -> None:
        self.w: np.ndarray | None = None

    @staticmethod
    def features(obs: np.ndarray) -> np.ndarray:
        o = np.clip(obs, -10, 10)
        al = np.arange(len(obs))[:, None] / 100.0
        return np.concatenate([o, o**2, al, al**2, al**3, np.ones_like(al)], axis=1)

    def predict(self, obs: np.ndarray) -> np.ndarray:
        return np.zeros(len(obs)) if self.w is None else self.features(obs) @ self.w

    def fit(self, obs: np.ndarray, returns: np.ndarray) -> None:
        f = self.features(obs)
        self.w = np.linalg.solve(f.T @ f + 1e-5 * np.eye(f.shape[1]), f.T @ returns)


class PGProblem:
    """The env, the policy and the estimates every method uses; counts the trajectories it samples."""

    def __init__(self, env, policy: Policy, discount: float, horizon: int, seed: int) -> None:
        self.env, self.policy, self.discount, self.horizon, self.seed = env, policy, discount, horizon, seed
        self.shapes = [p.shape for p in policy.parameters()]
        self.names = [n for n, _ in policy.named_parameters()]
        self.gen = torch.Generator().manual_seed(seed)
        self.baseline = LinearBaseline()
        self.count = 0
        self.returns: list[float] = []

    def rollout(
        self, theta: torch.Tensor, env_seed: int, gen: torch.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        vector_to_parameters(theta.detach(), self.policy.parameters())
        obs, _ = self.env.reset(seed=env_seed)
        act = self.policy.actor(self.horizon, gen)
        o, a, r = [], [], []
        for t in range(self.horizon):
            action = act(t, obs)
            nxt, rew, term, trunc, _ = self.env.step(action)
            o.append(obs), a.append(action), r.append(rew)
            obs = nxt
            if term or trunc:
                break
        return np.asarray(o, np.float32), np.asarray(a), np.asarray(r, np.float64)

    def sample(self, theta: torch.Tensor) -> Trajectory:
        """One trajectory at theta, its Phi coefficients from the baseline fitted so far, then the baseline refit."""
        obs, act, rew = self.rollout(theta, item_seed(self.seed, self.count), self.gen)
        disc = self.discount ** np.arange(len(rew))
        togo = np.cumsum((rew * disc)[::-1])[::-1] / disc  # R_t
        weight = disc * (togo - self.baseline.predict(obs))
        self.baseline.fit(obs, togo)
        self.count += 1
        self.returns.append(float(rew.sum()))
        return Trajectory(torch.from_numpy(obs), torch.from_numpy(act), torch.as_tensor(weight, dtype=torch.float32),
                          float(rew.sum()))  # fmt: skip

    def log_probs(self, theta: torch.Tensor, traj: Trajectory) -> torch.Tensor:
        parts = torch.split(theta, [math.prod(s) for s in self.shapes])
        params = {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}
        return torch.func.functional_call(self.policy, params, (traj.obs, traj.act))  # [T]

    def grad(self, theta: torch.Tensor, traj: Trajectory) -> torch.Tensor:
        """g(tau, theta) = grad_theta Phi(tau, theta)."""
        th = theta.detach().requires_grad_()
        return torch.autograd.grad((traj.weight * self.log_probs(th, traj)).sum(), th)[0]

    def hessian_vector(self, theta: torch.Tensor, traj: Trajectory, v: torch.Tensor) -> torch.Tensor:
        """B(tau, theta) v with B = grad Phi grad log p(tau|theta)^T + hess Phi: one double backward."""
        th = theta.detach().requires_grad_()
        lp = self.log_probs(th, traj)
        g = torch.autograd.grad((traj.weight * lp).sum(), th, create_graph=True)[0]
        hv = torch.autograd.grad(g @ v, th, retain_graph=True)[0]
        score = torch.autograd.grad(lp.sum(), th)[0]
        return g.detach() * (score @ v) + hv

    def log_ratio(self, traj: Trajectory, num: torch.Tensor, den: torch.Tensor) -> float:
        """log p(tau | num) - log p(tau | den) (the dynamics cancel)."""
        with torch.no_grad():
            return float((self.log_probs(num, traj) - self.log_probs(den, traj)).sum())


def _unit(d: torch.Tensor) -> torch.Tensor:
    return d / d.norm().clamp_min(1e-12)


class Reinforce:
    """Vanilla PG (the authors' ``sgd`` baseline): theta_{t+1} = theta_t + gamma_t g(tau_t, theta_t),
    gamma_t = gamma_0 (2 / (t + 2))^(2/3), not normalised."""

    def __init__(self, step: float, eta: float) -> None:
        self.step0 = step

    def step(self, t: int, theta, prev, pb: PGProblem) -> tuple[torch.Tensor, dict]:
        g = pb.grad(theta, pb.sample(theta))
        return theta + self.step0 * (2 / (t + 2)) ** (2 / 3) * g, {"grad_norm": float(g.norm())}


class StormPG:
    """STORM-PG (Yuan et al. 2020, batch 1): d_0 = g(tau_0, theta_0),
    d_t = eta g(tau_t, theta_t) + (1 - eta) [d_{t-1} + g(tau_t, theta_t) - w_t g(tau_t, theta_{t-1})],
    w_t = p(tau_t | theta_{t-1}) / p(tau_t | theta_t) (importance weight, unclipped); theta_{t+1} = theta_t +
    alpha d_t with constant alpha (``step``) and eta."""

    def __init__(self, step: float, eta: float) -> None:
        self.alpha, self.eta, self.d = step, eta, None

    def step(self, t: int, theta, prev, pb: PGProblem) -> tuple[torch.Tensor, dict]:
        traj = pb.sample(theta)
        g = pb.grad(theta, traj)
        if self.d is None:
            self.d, w = g, 1.0
        else:
            w = float(torch.tensor(pb.log_ratio(traj, prev, theta), dtype=torch.float64).exp())  # inf, not raise
            self.d = self.eta * g + (1 - self.eta) * (self.d + g - w * pb.grad(prev, traj))
        return theta + self.alpha * self.d, {"is_weight": w}


class NPGIGT:
    """N-PG-IGT (Algorithm 1): theta~_t = theta_t + ((1 - eta_t) / eta_t)(theta_t - theta_{t-1}); tau_t ~ p(.|theta~_t);
    d_t = (1 - eta_t) d_{t-1} + eta_t g(tau_t, theta~_t); theta_{t+1} = theta_t + gamma_t d_t / ||d_t||;
    eta_t = eta_0 (2 / (t + 2))^(4/5), gamma_t = gamma_0 * 2 / (t + 2) (theta_{-1} = theta_0, d_{-1} = 0)."""

    def __init__(self, step: float, eta: float) -> None:
        self.step0, self.eta0, self.d = step, eta, None

    def step(self, t: int, theta, prev, pb: PGProblem) -> tuple[torch.Tensor, dict]:
        eta = self.eta0 * (2 / (t + 2)) ** 0.8
        shift = (1 - eta) / eta
        tilde = theta + shift * (theta - prev)
        g = pb.grad(tilde, pb.sample(tilde))
        self.d = g if self.d is None else (1 - eta) * self.d + eta * g
        return theta + self.step0 * 2 / (t + 2) * _unit(self.d), {"extrapolation": shift}


class HARPG:
    """(N)-HARPG (Algorithm 2): q_t ~ U(0,1), theta^_t = q_t theta_t + (1 - q_t) theta_{t-1}, tau^_t ~ p(.|theta^_t),
    v_t = B(tau^_t, theta^_t)(theta_t - theta_{t-1}); tau_t ~ p(.|theta_t);
    d_t = (1 - eta_t)(d_{t-1} + v_t) + eta_t g(tau_t, theta_t); eta_t = eta_0 * 2 / (t + 2) (so d_0 = g_0 and no
    tau^_0 is drawn, as the authors' code). Normalised: theta_{t+1} = theta_t + gamma_t d_t / ||d_t||,
    gamma_t = gamma_0 * 2 / (t + 2); plain: theta_{t+1} = theta_t + gamma_t d_t, gamma_t = gamma_0 (2 / (t + 2))^(1/2).
    Two trajectories per iteration after the first."""

    normalised = False

    def __init__(self, step: float, eta: float) -> None:
        self.step0, self.eta0, self.d = step, eta, None

    def step(self, t: int, theta, prev, pb: PGProblem) -> tuple[torch.Tensor, dict]:
        eta = min(1.0, self.eta0 * 2 / (t + 2))
        info = {}
        if self.d is None or eta == 1.0:
            v = torch.zeros_like(theta)
        else:
            q = float(torch.rand((), generator=pb.gen))
            hat = q * theta + (1 - q) * prev
            v = pb.hessian_vector(hat, pb.sample(hat), theta - prev)
            info["hv_norm"] = float(v.norm())
        g = pb.grad(theta, pb.sample(theta))
        self.d = g if self.d is None else (1 - eta) * (self.d + v) + eta * g
        if self.normalised:
            return theta + self.step0 * 2 / (t + 2) * _unit(self.d), info
        return theta + self.step0 * (2 / (t + 2)) ** 0.5 * self.d, info


class NHARPG(HARPG):
    __doc__ = HARPG.__doc__
    normalised = True


ESTIMATORS = {"reinforce": Reinforce, "storm_pg": StormPG, "n_pg_igt": NPGIGT, "harpg": HARPG, "n_harpg": NHARPG}


def make_problem(cfg: PGConfig) -> PGProblem:
    import gymnasium as gym

    env = gym.make(cfg.env, max_episode_steps=cfg.horizon)
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    n_out = env.action_space.n if discrete else env.action_space.shape[0]
    torch.manual_seed(cfg.seed)  # nn.Linear's initialisation draws from the global generator
    policy = Policy(env.observation_space.shape[0], n_out, cfg.hidden or ENV_WIDTH[cfg.env], discrete)
    return PGProblem(env, policy, cfg.discount, cfg.horizon, cfg.seed)


def evaluate(pb: PGProblem, theta: torch.Tensor, episodes: int, seed: int) -> float:
    """Mean undiscounted return of the stochastic policy at theta over fixed seeds (not counted as samples)."""
    gen = torch.Generator().manual_seed(seed + 7)
    return float(np.mean([pb.rollout(theta, item_seed(seed, 900_000 + i), gen)[2].sum() for i in range(episodes)]))


def train_pg(cfg: PGConfig) -> dict:
    """Run ``cfg.method`` until ``cfg.trajectories`` are sampled; the curve is (trajectories, eval return)."""
    torch.set_num_threads(cfg.threads)
    pb = make_problem(cfg)
    est = ESTIMATORS[cfg.method](cfg.step or DEFAULT_STEP[cfg.env][cfg.method], cfg.eta or DEFAULT_ETA[cfg.method])
    theta = parameters_to_vector(pb.policy.parameters()).detach()
    prev, t, logs, diverged = theta.clone(), 0, [], False
    curve = [(0, evaluate(pb, theta, cfg.eval_episodes, cfg.seed))]
    while pb.count < cfg.trajectories:
        try:
            new, info = est.step(t, theta, prev, pb)
        except ValueError:  # torch.distributions refusing a non-finite mean or a zero std
            new, info = theta * math.nan, {}
        logs.append(info)
        if not torch.isfinite(new).all():
            diverged = True
            break
        prev, theta, t = theta, new.detach(), t + 1
        if pb.count // cfg.eval_every > curve[-1][0] // cfg.eval_every or pb.count >= cfg.trajectories:
            curve.append((pb.count, evaluate(pb, theta, cfg.eval_episodes, cfg.seed)))
    metrics = {k: float(np.nanmean([x[k] for x in logs if k in x])) for k in {k for x in logs for k in x}}
    if "is_weight" in metrics:
        metrics["is_weight_max"] = max(x["is_weight"] for x in logs)
    record = {"config": asdict(cfg), "iterations": t, "trajectories": pb.count, "diverged": diverged,
              "curve": curve, "train_returns": pb.returns, "metrics": metrics}  # fmt: skip
    if cfg.out:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "pg.json").write_text(json.dumps(record))
    return record
