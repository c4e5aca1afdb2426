"""Steering a diffusion policy toward an STL task: robustness of the predicted trajectory, and CTG-style guidance.

:class:`ChunkRobustness` scores candidate chunks on STLNav: each chunk is
integrated through the known dynamics (without the wind and gusts, which the
planner cannot see) from the current state (earlier steps are settled: the
env records a visit to A), and the predicted path is scored by the smooth
robustness of the part of phi
still open: before region A is visited, F[0, reach_by] A and G not(obstacle);
after, F[0, horizon] Goal and G not(obstacle). Scoring the whole phi on a
trace that ends 8 steps ahead would let "reach the goal" (the farther
subgoal, so the lower robustness) dominate the min and pull away from A.

:class:`STLGuided` is guidance at the last denoising steps, as the CTG
baseline of Meng and Fan's STL diffusion-policy code (``--guidance_before``,
``--guidance_niters``, ``--guidance_lr``): after each of the last ``last``
steps, ``iters`` gradient steps raise the robustness of the step's mean (with
eta = 0 the mean is x_{t-1} itself), each change clipped elementwise to
+-``clip`` * sqrt(1 - abar_t). Differences from their code: the sign of the
update is kept (they clip ``abs(mu_opt - mu_init)``, so their guided mean
only ever moves up), plain gradient ascent replaces Adam, and the clip is
the step's noise scale rather than beta_t (with 10 DDIM steps over a
100-step cosine schedule, beta_t of the last steps is below 0.01 and the
guidance would do nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from steerable.config import opt
from steerable.control.steering.controller import Controller
from steerable.control.steering.process import Root
from steerable.control.worlds.envs import STLNav
from steerable.control.worlds.stl import Always, And, Eventually, Formula, Not, inside_disk
from steerable.errors import ConfigError
from steerable.streams import stream


def integrate(pos: torch.Tensor, vel: torch.Tensor, actions: torch.Tensor, dt: float, damping: float) -> torch.Tensor:
    """Positions [n, H, 2] after each of the actions [n, H, 2] (clipped to [-1, 1]) from one state (no wind)."""
    a = actions.clamp(-1.0, 1.0)
    out, p, v = [], pos.expand(len(a), 2), vel.expand(len(a), 2)
    for k in range(a.shape[1]):
        v = damping * v + dt * a[:, k]
        p = p + dt * v
        out.append(p)
    return torch.stack(out, dim=1)


@dataclass
class ChunkRobustness:
    """Robustness [n] of the open part of STLNav's phi on (visited positions + each chunk's predicted path)."""

    env: STLNav
    tau: float = 0.05

    def formula(self, stage: str, offset: int) -> Formula:
        c, s = self.env.config, self.env.spec
        safe = Always(And(tuple(Not(inside_disk(x, y, r)) for x, y, r in c.obstacles)), 0, 10**6)
        if stage == "A":
            return And((Eventually(inside_disk(*s.region), 0, max(0, s.reach_by - offset)), safe))
        return And((Eventually(inside_disk(*self.env.goal, c.goal_radius), 0, 10**6), safe))

    def __call__(self, chunks: torch.Tensor) -> torch.Tensor:
        """``chunks`` [n, H, 2] env actions from the env's current state."""
        c = self.env.config
        pos = torch.as_tensor(self.env.pos, dtype=chunks.dtype)
        vel = torch.as_tensor(self.env.vel, dtype=chunks.dtype)
        pred = integrate(pos, vel, chunks, c.dt, c.damping)  # [n, H, 2]
        # the trace starts at the current step: earlier steps are settled (a visit to A is recorded by the env)
        trace = torch.cat([pos.expand(len(pred), 1, 2), pred], dim=1)
        stage = "A" if self.env.visited_at is None else "goal"
        return self.formula(stage, self.env.t).at0(trace, self.tau)


@dataclass
class STLGuided(Controller):
    last: int = opt(3, "Guided last denoising steps (the budget; at most the policy's DDIM steps).", ge=0, le=10_000)
    iters: int = opt(1, "Gradient steps on robustness after each guided denoising step.", ge=0, le=100)
    lr: float = opt(0.5, "Gradient step size.", ge=0, le=1e4)
    clip: float = opt(1.0, "Each change is clipped to +-clip x the step's noise scale.", ge=0, le=1e4)
    tau: float = opt(0.05, "Temperature of the smooth min/max of the robustness.", gt=0, le=10)
    name = "stl"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.last > self.policy.steps_inference:
            raise ConfigError(f"stl: last must be in [0, {self.policy.steps_inference}] (got {self.last})")
        self.gradients = 0
        self.moved = 0.0  # total |change| the guidance made (so a run can tell it fired)

    def act(self, rows: list[int], seen: list[list[np.ndarray]], envs) -> dict[int, np.ndarray]:
        if not all(isinstance(envs[r], STLNav) for r in rows):
            raise ConfigError("stl guidance steers toward STLNav's task: run it with --env builtin:stlnav")
        p, proc, n = self.policy, self.proc, self.policy.steps_inference
        robust = [ChunkRobustness(envs[r], self.tau) for r in rows]
        cond = torch.stack([p.condition(p.frames(seen[r])) for r in rows])
        before = proc.usage
        state = p.start_state(proc, cond, [stream(self.seeds[r], self.query[r], 0) for r in rows])
        for i in range(n):
            with torch.no_grad():
                proc.propose(state, 1)
            if i < n - self.last:
                continue
            # the noise scale of the level just reached bounds each change (a small nudge after the last step)
            noise = float((1 - proc.abar(torch.tensor([i + 1]))[0]).sqrt()) if i + 1 < n else 0.05
            for _ in range(self.iters):
                mu = state.x.detach().requires_grad_(True)
                acts = p.action_scale.denormalize(p.future(mu))
                rho = torch.cat([rb(acts[k : k + 1]) for k, rb in enumerate(robust)])
                (grad,) = torch.autograd.grad(rho.sum(), mu)
                delta = (self.lr * grad).clamp(-self.clip * noise, self.clip * noise)
                state.x = (mu + delta).detach()
                state.fresh[:] = False
                self.gradients += 1
                self.moved += float(delta.abs().sum())
        chunks = p.future(state.x.clamp(-1, 1))
        self._charge(rows, (proc.usage - before).nfe)
        return {r: self._run(r, chunks[k]) for k, r in enumerate(rows)}


def path_diversity(paths: list[np.ndarray], length: int = 100) -> float:
    """Mean pairwise distance between paths (each padded with its last point to ``length``, mean over time)."""
    if len(paths) < 2:
        return float("nan")
    fixed = np.stack([np.concatenate([p, np.repeat(p[-1:], max(0, length - len(p)), 0)])[:length] for p in paths])
    d = np.linalg.norm(fixed[:, None] - fixed[None, :], axis=-1).mean(-1)  # [n, n]
    return float(d[np.triu_indices(len(paths), 1)].mean())


@dataclass
class RobustnessScorer:
    """The :class:`~steerable.reward.scorer.Scorer` of normalised chunks [n, past+H, act_dim] by their robustness,
    on the STLNav env of each chunk's :class:`~steerable.control.steering.process.Root`."""

    policy: object
    tau: float = 0.05
    range: tuple[float, float] = (float("-inf"), float("inf"))
    calls: int = 0
    forward_tokens: int = 0

    def score(self, conds: Sequence[Root], samples) -> list[float]:
        self.calls += len(samples)
        acts = self.policy.action_scale.denormalize(self.policy.future(torch.as_tensor(samples))).double()
        out = [0.0] * len(samples)
        groups: dict[int, list[int]] = {}
        for i, root in enumerate(conds):  # one robustness call per distinct episode state (FK: all the same)
            groups.setdefault(id(root), []).append(i)
        with torch.no_grad():
            for rows in groups.values():
                rho = ChunkRobustness(conds[rows[0]].env, self.tau)(acts[rows]).tolist()
                for i, v in zip(rows, rho, strict=True):
                    out[i] = v
        return out


@dataclass
class STLFK(Controller):
    """FK steering (the diffusion room's :class:`~steerable.diffusion.fk.FKSteering`) of each chunk toward
    robustness: ``particles`` chunks per prediction, resampled at DDIM steps 2, 4, 6, 8 and 10 with the diff
    potential exp(lam (r_t - r_prev)); the chunk run is the best final particle (the authors' answer)."""

    particles: int = opt(4, "Particles per prediction (the budget).", ge=1, le=1024)
    lam: float = opt(10.0, "lambda of the potential exp(lambda (r_t - r_prev)).", ge=0, le=1e4)
    tau: float = opt(0.05, "Temperature of the smooth min/max of the robustness.", gt=0, le=10)
    eta: float = opt(1.0, "DDIM eta (FK needs stochastic steps).", ge=0, le=1)
    name = "fk"

    def __post_init__(self) -> None:
        from steerable.diffusion.fk import FKSteering
        from steerable.diffusion.process import DiffusionProcess

        super().__post_init__()
        n = self.policy.steps_inference
        every = max(1, n // 5)
        self.fk = FKSteering(lam=self.lam, potential="diff", resample_every=every, t_start=every, t_end=n)
        # Process[Root]: every particle is conditioned on the episode's current observation frames
        self.single = DiffusionProcess(
            self.policy.denoiser,
            self.policy.scheduler,
            n,
            eta=self.eta,
            sample_shape=self.policy.sample_shape,
            encode=self.observed,
        )
        self.scorer = RobustnessScorer(self.policy, self.tau)
        self.resamples = 0

    def observed(self, root: Root) -> torch.Tensor:
        """The denoiser's condition at an episode's root: its observation frames, normalised."""
        return self.policy.condition(self.policy.frames(root.seen))

    def act(self, rows: list[int], seen: list[list[np.ndarray]], envs) -> dict[int, np.ndarray]:
        out = {}
        for r in rows:
            res = self._search(r, seen, envs, self.fk, self.scorer, self.particles, self.single)
            self.resamples += res.info["resamples"]
            out[r] = self._run(r, self.policy.future(torch.as_tensor(res.sample)[None].clamp(-1, 1))[0])
        return out
