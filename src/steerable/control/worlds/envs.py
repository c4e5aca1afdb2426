"""The built-in control world: a point mass among disk obstacles, as pure-numpy ``gymnasium.Env``s.

:class:`PointNav2D` is the world the control methods are measured on. A
point mass (x, y, vx, vy) is pushed by an acceleration action in [-1, 1]^2,
by an unobserved per-episode wind and by per-step gusts:

    v <- damping * v + dt * (a + wind + gust),   p <- p + dt * v,   dt = 0.1.

A disk obstacle sits between the start and the goal, and two more disks
narrow the passages above and below it, so a good path takes one of two
gaps (a two-mode demonstration set, which is what a diffusion policy is for)
and a sloppy one clips an edge. Reward: +1 on reaching the goal, -1 on a
collision (or on leaving the arena), -0.01 a step; success = goal reached
without a collision. ``terminated`` (goal, collision) and ``truncated`` (the
step limit) are reported apart.

Every env can be forked: :meth:`PointNav2D.clone` copies the whole state,
random stream included, and :meth:`get_state`/:meth:`set_state` move it as a
plain dict, so a search strategy can try an action chunk and come back.

Variants: :class:`MemoryNav` (the goal's side is shown only in the first
steps, so history matters), :class:`STLNav` (reach region A within 60
steps, then the goal by 100, never touching an obstacle) and
:class:`CueNav` (MemoryNav behind a start gate: the cue leaves no trace in
the path, only in the actions taken).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
import numpy as np

from steerable.config import check, opt
from steerable.errors import ConfigError


@dataclass(frozen=True)
class NavConfig:
    """The geometry and dynamics of a navigation world (lengths in arena units, times in steps)."""

    dt: float = opt(0.1, "Integration step (seconds).", gt=0, le=1)
    max_steps: int = opt(100, "Steps before the episode is truncated.", ge=1, le=10_000)
    damping: float = opt(0.98, "Velocity kept from one step to the next.", gt=0, le=1)
    start: tuple[float, float] = opt((0.0, 0.0), "Mean start position.")
    start_spread: float = opt(0.25, "Start y is drawn uniformly within +- this (x within a fifth of it).", ge=0)
    goal: tuple[float, float] = opt((4.0, 0.0), "Mean goal position.")
    goal_spread: float = opt(0.8, "Goal y is drawn uniformly within +- this.", ge=0)
    goal_radius: float = opt(0.3, "Reaching within this distance of the goal ends the episode as a success.", gt=0)
    # (x, y, radius) of each disk: the middle one forces a detour, the outer ones narrow the gaps to 0.5
    obstacles: tuple[tuple[float, float, float], ...] = opt(
        ((2.0, 0.0, 0.8), (2.0, 2.05, 0.75), (2.0, -2.05, 0.75)), "Disk obstacles as (x, y, radius)."
    )
    arena: tuple[float, float, float, float] = opt((-1.0, 5.5, -3.0, 3.0), "Arena (x_min, x_max, y_min, y_max).")
    wind: float = opt(0.25, "Per-episode unobserved wind: each component uniform within +- this.", ge=0)
    gust: float = opt(0.3, "Std of the per-step random acceleration.", ge=0)

    def __post_init__(self) -> None:
        check(self, "nav: ")
        for ob in self.obstacles:
            if len(ob) != 3 or ob[2] <= 0:
                raise ConfigError(f"nav: each obstacle must be (x, y, radius > 0) (got {ob})")


class PointNav2D(gym.Env):
    """A point mass navigating around disk obstacles to a goal; see the module docstring.

    Observation (float32): (x, y, vx, vy, gx, gy). Action: acceleration in [-1, 1]^2.
    """

    metadata = {"render_modes": []}
    name = "pointnav"

    def __init__(self, config: NavConfig | None = None) -> None:
        self.config = config or NavConfig()
        high = np.full(self.obs_dim, np.inf, dtype=np.float32)
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._obstacles = np.asarray(self.config.obstacles, dtype=np.float64).reshape(-1, 3)
        self._rng = np.random.default_rng()
        self.pos = np.zeros(2)
        self.vel = np.zeros(2)
        self.goal = np.asarray(self.config.goal, dtype=np.float64)
        self.wind = np.zeros(2)
        self.t = 0
        self.done = True
        self.outcome = ""  # "goal", "collision" or "timeout" once the episode is over

    obs_dim = 6

    # ---- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        c = self.config
        r = self._rng
        self.pos = np.array(c.start, dtype=np.float64) + np.array(
            [r.uniform(-0.2, 0.2) * c.start_spread, r.uniform(-c.start_spread, c.start_spread)]
        )
        self.vel = np.zeros(2)
        self.goal = np.array(c.goal, dtype=np.float64) + np.array([0.0, r.uniform(-c.goal_spread, c.goal_spread)])
        self.wind = r.uniform(-c.wind, c.wind, size=2)
        self.t = 0
        self.done = False
        self.outcome = ""
        self._reset_extra(options or {})
        return self._obs(), self._info()

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.done:
            raise ConfigError("step() after the episode ended: call reset() first")
        c = self.config
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        gust = self._rng.normal(0.0, c.gust, size=2) if c.gust > 0 else np.zeros(2)
        self.vel = c.damping * self.vel + c.dt * (a + self.wind + gust)
        self.pos = self.pos + c.dt * self.vel
        self.t += 1
        reward, terminated = -0.01, False
        if self.collides(self.pos[None])[0]:
            reward, terminated, self.outcome = reward - 1.0, True, "collision"
        elif self._at_goal():
            reward, terminated, self.outcome = reward + 1.0, True, "goal"
        truncated = not terminated and self.t >= c.max_steps
        if truncated:
            self.outcome = "timeout"
        self.done = terminated or truncated
        self._after_step()
        return self._obs(), reward, terminated, truncated, self._info()

    # ---- forking
    def clone(self) -> PointNav2D:
        """An independent copy with the same state and the same random stream (forking for search)."""
        return copy.deepcopy(self)

    def reseed(self, seed: int) -> None:
        """A new random stream for the draws to come (gusts); the state, wind included, stays. A search's fork
        re-seeds so that it cannot read the real episode's future draws."""
        self._rng = np.random.default_rng(seed)

    def get_state(self) -> dict[str, Any]:
        """Everything that determines the future, as a plain dict (the random stream included)."""
        return {
            "pos": self.pos.copy(),
            "vel": self.vel.copy(),
            "goal": self.goal.copy(),
            "wind": self.wind.copy(),
            "t": self.t,
            "done": self.done,
            "outcome": self.outcome,
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            **self._extra_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.pos, self.vel = np.array(state["pos"], dtype=np.float64), np.array(state["vel"], dtype=np.float64)
        self.goal, self.wind = np.array(state["goal"], dtype=np.float64), np.array(state["wind"], dtype=np.float64)
        self.t, self.done, self.outcome = int(state["t"]), bool(state["done"]), str(state["outcome"])
        self._rng.bit_generator.state = copy.deepcopy(state["rng"])
        self._set_extra_state(state)

    # ---- geometry
    def collides(self, points: np.ndarray) -> np.ndarray:
        """For points [n, 2]: inside an obstacle or outside the arena."""
        d = np.linalg.norm(points[:, None, :] - self._obstacles[None, :, :2], axis=-1)  # [n, obstacles]
        x0, x1, y0, y1 = self.config.arena
        outside = (points[:, 0] < x0) | (points[:, 0] > x1) | (points[:, 1] < y0) | (points[:, 1] > y1)
        return (d < self._obstacles[None, :, 2]).any(axis=1) | outside

    def clearance(self, points: np.ndarray) -> np.ndarray:
        """Signed distance [n] from each point to the nearest obstacle edge (negative inside)."""
        d = np.linalg.norm(points[:, None, :] - self._obstacles[None, :, :2], axis=-1) - self._obstacles[None, :, 2]
        return d.min(axis=1)

    @property
    def success(self) -> bool:
        return self.outcome == "goal"

    def _at_goal(self) -> bool:
        return bool(np.linalg.norm(self.pos - self.goal) < self.config.goal_radius)

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.pos, self.vel, self.goal]).astype(np.float32)

    def _info(self) -> dict:
        return {"t": self.t, "outcome": self.outcome, "success": self.success, "pos": self.pos.copy()}

    # hooks for the variants
    def _reset_extra(self, options: dict) -> None:
        pass

    def _after_step(self) -> None:
        pass

    def _extra_state(self) -> dict:
        return {}

    def _set_extra_state(self, state: dict) -> None:
        pass


MEMORY_CONFIG = NavConfig(
    goal=(3.5, 0.0),
    goal_spread=0.0,
    start_spread=0.1,
    obstacles=((1.6, 1.2, 0.45), (1.6, -1.2, 0.45)),
    wind=0.1,
    gust=0.15,
    max_steps=100,
)


class MemoryNav(PointNav2D):
    """The goal is one of two (above or below); which one is shown only in the first ``cue_steps`` steps.

    Observation: (x, y, vx, vy, gx, cue) with cue = +1 (upper goal) or -1
    (lower) while t < cue_steps, then 0. The demonstrations first stop at a
    hub on the centre line (between two posts), wait there, and only then head
    to the goal, so by the time the route forks nothing in the current
    observation tells the side: a memoryless policy flips a coin. Reaching the
    wrong goal ends the episode as a failure (reward 0).
    """

    name = "memorynav"
    goal_offset = 1.6
    cue_steps = 8
    hub = (1.6, 0.0)

    def __init__(self, config: NavConfig | None = None) -> None:
        super().__init__(config or MEMORY_CONFIG)
        self.side = 1.0

    def _reset_extra(self, options: dict) -> None:
        self.side = float(options.get("side", self._rng.choice([-1.0, 1.0])))
        self.goal = np.array([self.config.goal[0], self.side * self.goal_offset])

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        decoy = np.array([self.config.goal[0], -self.side * self.goal_offset])
        if not terminated and np.linalg.norm(self.pos - decoy) < self.config.goal_radius:
            reward, terminated, truncated, self.outcome, self.done = -0.01, True, False, "wrong goal", True
            info = self._info()
        return obs, reward, terminated, truncated, info

    def _obs(self) -> np.ndarray:
        cue = self.side if self.t < self.cue_steps else 0.0
        return np.array([*self.pos, *self.vel, self.goal[0], cue], dtype=np.float32)

    def _extra_state(self) -> dict:
        return {"side": self.side}

    def _set_extra_state(self, state: dict) -> None:
        self.side = float(state["side"])


@dataclass(frozen=True)
class STLSpec:
    """``phi = F[0, reach_by](A) and F[0, max_steps](Goal) and G(not obstacle)``, with A visited before the goal."""

    region: tuple[float, float, float] = opt((2.0, 1.05, 0.3), "Region A as (x, y, radius).")
    reach_by: int = opt(60, "Steps within which A must be visited.", ge=1)


class STLNav(PointNav2D):
    """PointNav2D with the task phi: visit region A within 60 steps, then the goal within 100, never colliding.

    The episode still ends at the goal or a collision (the env's reward is
    PointNav's); ``info["satisfied"]`` at the end says whether the visited
    trajectory satisfies phi, and :func:`steerable.control.worlds.stl.nav_spec`
    gives the smooth robustness used for steering.
    """

    name = "stlnav"

    def __init__(self, config: NavConfig | None = None, spec: STLSpec | None = None) -> None:
        super().__init__(config or replace(NavConfig(), goal_spread=0.4))
        self.spec = spec or STLSpec()
        self.visited_at: int | None = None

    def _reset_extra(self, options: dict) -> None:
        self.visited_at = None

    def _after_step(self) -> None:
        x, y, r = self.spec.region
        if self.visited_at is None and np.hypot(self.pos[0] - x, self.pos[1] - y) < r:
            self.visited_at = self.t

    @property
    def satisfied(self) -> bool:
        return self.success and self.visited_at is not None and self.visited_at <= self.spec.reach_by

    def _info(self) -> dict:
        return {**super()._info(), "visited_at": self.visited_at, "satisfied": self.done and self.satisfied}

    def _extra_state(self) -> dict:
        return {"visited_at": self.visited_at}

    def _set_extra_state(self, state: dict) -> None:
        self.visited_at = state["visited_at"]


CUE_CONFIG = NavConfig(
    goal=(2.5, 0.0),
    goal_spread=0.0,
    start_spread=0.1,
    obstacles=((1.5, 0.0, 0.3),),
    wind=0.1,
    gust=0.15,
    max_steps=100,
)


class CueNav(MemoryNav):
    """MemoryNav behind a start gate: the cue is shown for ``cue_steps`` steps, the gate holds the agent until
    ``hold_steps``, and only then can it move toward the cued goal (above or below a post).

    While the gate holds, the agent's pushes are spent and nothing moves
    (position fixed, velocity 0, gusts and wind without effect), so from
    ``cue_steps`` on every observation is the same whatever the side: a policy
    whose observation window (``history * stride`` steps) ends before the gate
    opens (``cue_steps + history * stride <= hold_steps``) sees nothing that
    tells the side when it must choose. The demonstrations push toward the
    cued side from the first step, so what the agent did (its executed
    actions) still carries the cue after the observations have lost it.
    Reaching the other goal ends the episode as a failure ("wrong goal").
    """

    name = "cuenav"
    goal_offset = 1.2
    cue_steps = 8
    hold_steps = 40

    def __init__(self, config: NavConfig | None = None) -> None:
        super().__init__(config or CUE_CONFIG)

    def step(self, action):
        held = self.t < self.hold_steps
        pos = self.pos.copy()
        obs, reward, terminated, truncated, info = super().step(action)
        if held:  # the gate holds: one step's drift from rest (dt^2 * |a| <= 0.02) reaches no goal, is undone here
            self.pos, self.vel = pos, np.zeros(2)
            obs, info = self._obs(), self._info()
        return obs, reward, terminated, truncated, info


ENVS = {"pointnav": PointNav2D, "memorynav": MemoryNav, "stlnav": STLNav, "cuenav": CueNav}


def make_env(name: str) -> gym.Env:
    """``builtin:pointnav`` (or ``pointnav``), ``memorynav``, ``stlnav``, ``cuenav``, or a gymnasium id."""
    key = name.removeprefix("builtin:")
    if key in ENVS:
        return ENVS[key]()
    if key == "Pendulum-v1":
        return gym.make("Pendulum-v1")
    raise ConfigError(
        f"unknown env {name!r}: use builtin:pointnav, builtin:memorynav, builtin:stlnav, builtin:cuenav or Pendulum-v1"
    )
