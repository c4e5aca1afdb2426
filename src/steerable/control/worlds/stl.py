"""Signal temporal logic: smooth robustness over batched trajectories, differentiable in torch.

A formula maps a trajectory batch ``x`` [batch, T, dim] to its robustness
signal rho [batch, T]: rho[:, t] > 0 iff the formula holds from time t on.
The quantitative semantics (Donze and Maler):

- predicate mu(x) >= 0:           rho = mu(x_t)
- not phi:                        rho = -rho_phi
- phi and psi / phi or psi:       rho = min / max(rho_phi, rho_psi)
- eventually[a, b] phi at t:      max over s in [t+a, t+b] of rho_phi(s)
- always[a, b] phi at t:          min over s in [t+a, t+b] of rho_phi(s)

Windows reaching past the end of the trajectory are cut at T-1 (a finite
trace; an eventually whose whole window lies past the end is -BIG, an always
+BIG: large finite numbers rather than infinities, so gradients never meet
inf - inf). Smooth robustness replaces max and min by log-sum-exp at temperature
``tau``: smax_tau(v) = tau * log sum_i exp(v_i / tau), smin = -smax(-v), the
form used by the STL-diffusion authors' ``stl_d_lib.py``; as tau -> 0 it
becomes the exact robustness (``tau=0`` computes the exact one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Signal = torch.Tensor  # [batch, T]
BIG = 1e4


def smax(v: torch.Tensor, tau: float, dim: int = -1) -> torch.Tensor:
    """tau * logsumexp(v / tau) along ``dim``; the exact max when tau == 0."""
    if tau == 0:
        return v.max(dim=dim).values
    return tau * torch.logsumexp(v / tau, dim=dim)


def smin(v: torch.Tensor, tau: float, dim: int = -1) -> torch.Tensor:
    return -smax(-v, tau, dim)


class Formula:
    """An STL formula; ``robustness(x, tau)`` is its signal [batch, T] and ``at0`` its value at time 0."""

    def robustness(self, x: torch.Tensor, tau: float = 0.0) -> Signal:
        raise NotImplementedError

    def at0(self, x: torch.Tensor, tau: float = 0.0) -> torch.Tensor:
        """Robustness of the whole trajectory (at time 0): [batch]."""
        return self.robustness(x, tau)[:, 0]

    def __and__(self, other: Formula) -> Formula:
        return And((self, other))

    def __or__(self, other: Formula) -> Formula:
        return Or((self, other))

    def __invert__(self) -> Formula:
        return Not(self)


@dataclass(frozen=True)
class Predicate(Formula):
    """mu(x_t) >= 0, with ``fn`` mapping [batch, T, dim] to [batch, T]."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    name: str = "mu"

    def robustness(self, x: torch.Tensor, tau: float = 0.0) -> Signal:
        return self.fn(x)


@dataclass(frozen=True)
class Not(Formula):
    phi: Formula

    def robustness(self, x: torch.Tensor, tau: float = 0.0) -> Signal:
        return -self.phi.robustness(x, tau)


@dataclass(frozen=True)
class And(Formula):
    parts: tuple[Formula, ...]

    def robustness(self, x: torch.Tensor, tau: float = 0.0) -> Signal:
        return smin(torch.stack([p.robustness(x, tau) for p in self.parts], dim=-1), tau)


@dataclass(frozen=True)
class Or(Formula):
    parts: tuple[Formula, ...]

    def robustness(self, x: torch.Tensor, tau: float = 0.0) -> Signal:
        return smax(torch.stack([p.robustness(x, tau) for p in self.parts], dim=-1), tau)


def _windows(rho: Signal, a: int, b: int, pad: float) -> torch.Tensor:
    """[batch, T, b-a+1]: rho at s = t+a .. t+b for each t, ``pad`` past the end of the trace."""
    batch, T = rho.shape
    padded = torch.cat([rho, rho.new_full((batch, b + 1), pad)], dim=1)
    idx = torch.arange(T, device=rho.device)[:, None] + torch.arange(a, b + 1, device=rho.device)[None, :]
    return padded[:, idx]


@dataclass(frozen=True)
class Eventually(Formula):
    """F[a, b] phi: phi holds at some step in [t+a, t+b]."""

    phi: Formula
    a: int = 0
    b: int = 10**9

    def robustness(self, x: torch.Tensor, tau: float = 0.0) -> Signal:
        rho = self.phi.robustness(x, tau)
        b = min(self.b, rho.shape[1] - 1 + self.a)
        return smax(_windows(rho, self.a, b, -BIG), tau)


@dataclass(frozen=True)
class Always(Formula):
    """G[a, b] phi: phi holds at every step in [t+a, t+b]."""

    phi: Formula
    a: int = 0
    b: int = 10**9

    def robustness(self, x: torch.Tensor, tau: float = 0.0) -> Signal:
        rho = self.phi.robustness(x, tau)
        b = min(self.b, rho.shape[1] - 1 + self.a)
        return smin(_windows(rho, self.a, b, BIG), tau)


@dataclass(frozen=True)
class Until(Formula):
    """phi U[a, b] psi: psi holds at some s in [t+a, t+b] and phi at every step from t up to s (exclusive).

    rho(t) = max_s min(rho_psi(s), min_{t <= s' < s} rho_phi(s')), all (t, s)
    pairs at once on a [batch, T, T] grid, the running min by ``cummin`` (exact)
    or ``logcumsumexp`` (smooth).
    """

    phi: Formula
    psi: Formula
    a: int = 0
    b: int = 10**9

    def robustness(self, x: torch.Tensor, tau: float = 0.0) -> Signal:
        rp, rq = self.phi.robustness(x, tau), self.psi.robustness(x, tau)
        batch, T = rp.shape
        idx = torch.arange(T, device=rp.device)
        lag = idx[None, :] - idx[:, None]  # [t, s]: s - t
        rows = rp[:, None, :].expand(batch, T, T).masked_fill(lag < 0, BIG)
        if tau == 0:
            running = torch.cummin(rows, dim=-1).values  # min over [t, s]
        else:
            running = -tau * torch.logcumsumexp(-rows / tau, dim=-1)
        hold = torch.cat([rows.new_full((batch, T, 1), BIG), running[..., :-1]], dim=-1)  # min over [t, s)
        term = smin(torch.stack([rq[:, None, :].expand(batch, T, T), hold], dim=-1), tau)
        term = term.masked_fill((lag < self.a) | (lag > self.b), -BIG)
        return smax(term, tau)


# ---------------------------------------------------------------- predicates for the navigation world
def inside_disk(cx: float, cy: float, r: float, name: str = "in") -> Predicate:
    """r - ||p - c|| >= 0: the position (the first two coordinates) lies in the disk."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return r - torch.sqrt((x[..., 0] - cx) ** 2 + (x[..., 1] - cy) ** 2 + 1e-12)

    return Predicate(fn, name)


def nav_spec(region, goal, goal_radius: float, obstacles, reach_by: int, horizon: int) -> Formula:
    """STLNav's phi = F[0,reach_by] A  and  F[0,horizon] Goal  and  G not(obstacle), with A visited before the goal.

    "A before the goal" is written as (not Goal) U A, so a trajectory that
    touches the goal first does not satisfy phi.
    """
    a = inside_disk(*region, name="A")
    g = inside_disk(goal[0], goal[1], goal_radius, name="goal")
    safe = And(tuple(Not(inside_disk(ox, oy, orad, name=f"obs{i}")) for i, (ox, oy, orad) in enumerate(obstacles)))
    return And(
        (
            Eventually(a, 0, reach_by),
            Eventually(g, 0, horizon),
            Always(safe, 0, horizon),
            Until(Not(g), a, 0, reach_by),
        )
    )
