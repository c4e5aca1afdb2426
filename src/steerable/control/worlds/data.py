"""Offline datasets for the control world: a deliberately mediocre scripted planner, and Pendulum-v1 data.

A dataset is a flat set of transitions (obs, action, reward, next_obs,
terminated, truncated) plus the episode index of each row, saved as one
``.npz``; :func:`make_dataset` is deterministic given its seed.

PointNav2D demonstrations come from a waypoint planner (a PD controller
chasing waypoints through the upper or lower gap, then the goal):

- ``clean`` (about half): both gaps equally, modest action noise;
- ``sloppy`` (about a third): lower gains, more noise and waypoints off the
  gap's centre line, so some are slow and some clip an edge;
- ``failing`` (about a fifth): straight at the goal through the middle
  disk, aimed at an outer disk, or dawdling until the time runs out.

Pendulum-v1 data comes from an energy-shaping swing-up controller with a PD catch
near the top, action noise and a pump gain drawn per episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from steerable.config import check, opt
from steerable.control.worlds.envs import CueNav, MemoryNav, PointNav2D, make_env
from steerable.errors import InputError

FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated", "episode")


@dataclass(frozen=True)
class Dataset:
    """Transitions in arrays of equal length; ``episode`` numbers each row's episode (0, 1, ...)."""

    obs: np.ndarray  # [n, obs_dim] float32
    action: np.ndarray  # [n, act_dim] float32, in the env's action units
    reward: np.ndarray  # [n] float32
    next_obs: np.ndarray  # [n, obs_dim]
    terminated: np.ndarray  # [n] bool
    truncated: np.ndarray  # [n] bool
    episode: np.ndarray  # [n] int64
    kind: np.ndarray  # [episodes] str: which part of the mixture made each episode
    success: np.ndarray  # [episodes] bool

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def episodes(self) -> int:
        return len(self.kind)

    def episode_slices(self) -> list[slice]:
        """Row ranges of each episode, in order (rows are stored episode by episode)."""
        starts = np.flatnonzero(np.r_[True, self.episode[1:] != self.episode[:-1]])
        ends = np.r_[starts[1:], len(self.episode)]
        return [slice(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, **{k: getattr(self, k) for k in (*FIELDS, "kind", "success")})

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(**{k: z[k] for k in (*FIELDS, "kind", "success")})
        except FileNotFoundError:
            raise InputError(f"no dataset at {path}: make one with `steerable control data --out {path}`") from None
        except (KeyError, ValueError, OSError) as e:
            raise InputError(f"{path} is not a control dataset ({e}): remake it with `steerable control data`") from e


@dataclass(frozen=True)
class DataConfig:
    """How ``steerable control data`` makes a dataset (the CLI's flags are these fields)."""

    out: str = opt(..., "Path of the .npz to write.")
    env: str = opt(
        "builtin:pointnav", "builtin:pointnav, builtin:memorynav, builtin:stlnav, builtin:cuenav or Pendulum-v1."
    )
    episodes: int = opt(400, "Episodes to record.", ge=1, le=100_000)
    seed: int = opt(0, "Seed (the dataset is a function of it).", ge=0)
    clean: float = opt(0.5, "Share of clean demonstrations (PointNav).", ge=0, le=1)
    sloppy: float = opt(0.3, "Share of sloppy demonstrations (PointNav); the rest fail.", ge=0, le=1)

    def __post_init__(self) -> None:
        check(self, "data: ")
        if self.clean + self.sloppy > 1:
            raise InputError(f"data: clean + sloppy must be <= 1 (got {self.clean} + {self.sloppy})")


# ---------------------------------------------------------------- PointNav planner
@dataclass
class WaypointPlanner:
    """A PD controller chasing waypoints in turn; ``noise`` is the std of Gaussian action noise."""

    waypoints: list[np.ndarray]
    kp: float = 1.6
    kd: float = 1.8
    noise: float = 0.1
    reach: float = 0.35
    speed: float = 1.0  # the controller aims for at most this speed
    i: int = 0

    def act(self, pos: np.ndarray, vel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        while self.i < len(self.waypoints) - 1 and np.linalg.norm(self.waypoints[self.i] - pos) < self.reach:
            self.i += 1
        return self.track(self.waypoints[self.i], pos, vel, rng)

    def track(self, target: np.ndarray, pos: np.ndarray, vel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        err = target - pos
        dist = np.linalg.norm(err)
        target_v = err / max(dist, 1e-6) * min(self.speed, self.kp * dist)  # speed-limited approach
        a = self.kd * (target_v - vel) + rng.normal(0.0, self.noise, size=2)
        return np.clip(a, -1.0, 1.0)


def _gap_y(env: PointNav2D) -> float:
    """Centre of the upper gap between the middle disk and the upper disk."""
    obs = np.asarray(env.config.obstacles)
    mid, upper = obs[0], obs[np.argmax(obs[:, 1])]
    return float(((mid[1] + mid[2]) + (upper[1] - upper[2])) / 2)


def pointnav_planner(env: PointNav2D, kind: str, rng: np.random.Generator) -> WaypointPlanner:
    side = rng.choice([-1.0, 1.0])
    gy = _gap_y(env) * side
    cx = float(np.asarray(env.config.obstacles)[0, 0])
    goal = env.goal.copy()
    if kind == "clean":
        wps = [np.array([cx - 0.9, gy]), np.array([cx + 0.7, gy]), goal]
        return WaypointPlanner(wps, noise=0.15)
    if kind == "sloppy":
        off = rng.uniform(-0.3, 0.3)
        wps = [np.array([cx - 0.8, gy + off]), np.array([cx + 0.6, gy + off]), goal]
        return WaypointPlanner(
            wps, kp=rng.uniform(1.0, 1.6), kd=rng.uniform(1.0, 1.8), noise=0.3, speed=rng.uniform(0.6, 1.0)
        )
    # failing: head-on, into an outer disk's edge, or dawdling until time runs out
    mode = rng.choice(["head-on", "outer", "dawdle"])
    if mode == "head-on":
        return WaypointPlanner([goal], noise=0.2)
    if mode == "outer":
        wps = [np.array([cx - 0.9, side * (_gap_y(env) + 0.45)]), np.array([cx + 0.7, gy]), goal]
        return WaypointPlanner(wps, noise=0.2)
    wps = [np.array([cx - 1.2, gy * 0.5]), np.array([cx - 0.9, gy]), np.array([cx + 0.7, gy]), goal]
    return WaypointPlanner(wps, noise=0.3, speed=0.12)


def memorynav_planner(env: MemoryNav, kind: str, rng: np.random.Generator) -> WaypointPlanner:
    """Nod toward the cued side, go to the hub and wait there (past the cue), then go to the cued goal.

    The early nod makes the first actions depend on the side, so past actions
    carry the cue (what past-token prediction asks the policy to recover)."""
    hub = np.array(env.hub)
    nod = np.array([0.6, 0.35 * np.sign(env.goal[1])])
    wps = [nod, hub, env.goal.copy()]
    return WaypointPlanner(wps, noise=0.15 if kind == "clean" else 0.3, reach=0.15)


def cuenav_planner(env: CueNav, kind: str, rng: np.random.Generator) -> WaypointPlanner:
    """Push toward the cued side of the post from the first step (the gate holds the agent, so the push shows in
    the actions only), then, once the gate opens, pass the post on that side and go to the cued goal."""
    side = float(np.sign(env.goal[1]))
    post_x, _, post_r = env.config.obstacles[0]
    wps = [np.array([post_x, side * (post_r + 0.6)]), env.goal.copy()]
    return WaypointPlanner(wps, noise=0.15 if kind == "clean" else 0.3)


# ---------------------------------------------------------------- recording
def _record(env: PointNav2D, planner: WaypointPlanner, seed: int, rng: np.random.Generator, hold: int = 0):
    obs, _ = env.reset(seed=seed)
    rows = []
    held = 0
    while True:
        # MemoryNav demos linger at the hub (the second-to-last waypoint) for `hold` steps before leaving it
        hub = len(planner.waypoints) - 2
        if hold and planner.i == hub and held < hold and np.linalg.norm(env.pos - planner.waypoints[hub]) < 0.4:
            held += 1
            a = planner.track(planner.waypoints[hub], env.pos, env.vel, rng).astype(np.float32)
        else:
            a = planner.act(env.pos, env.vel, rng).astype(np.float32)
        nxt, r, term, trunc, _ = env.step(a)
        rows.append((obs, a, r, nxt, term, trunc))
        obs = nxt
        if term or trunc:
            return rows, env.success


def make_dataset(cfg: DataConfig) -> Dataset:
    """Record ``cfg.episodes`` episodes of the scripted data for ``cfg.env`` (deterministic in ``cfg.seed``)."""
    key = cfg.env.removeprefix("builtin:")
    if key == "Pendulum-v1":
        return pendulum_dataset(cfg.episodes, cfg.seed)
    env = make_env(cfg.env)
    rng = np.random.default_rng(cfg.seed)
    n_clean = round(cfg.episodes * cfg.clean)
    n_sloppy = round(cfg.episodes * cfg.sloppy)
    kinds = ["clean"] * n_clean + ["sloppy"] * n_sloppy + ["failing"] * (cfg.episodes - n_clean - n_sloppy)
    if key in ("memorynav", "cuenav"):
        kinds = ["clean" if k == "clean" else "sloppy" for k in kinds]  # memory demos all reach the cued goal
    rows: list[tuple] = []
    episode: list[int] = []
    success = []
    for e, kind in enumerate(kinds):
        env_seed = int(rng.integers(2**31))
        env.reset(seed=env_seed)
        if key == "memorynav":
            planner = memorynav_planner(env, kind, rng)
            ep, ok = _record(env, planner, env_seed, rng, hold=int(rng.integers(8, 16)))
        elif key == "cuenav":
            ep, ok = _record(env, cuenav_planner(env, kind, rng), env_seed, rng)
        else:
            planner = pointnav_planner(env, kind, rng)
            ep, ok = _record(env, planner, env_seed, rng)
        rows += ep
        episode += [e] * len(ep)
        success.append(ok)
    cols = list(zip(*rows, strict=True))
    return Dataset(
        obs=np.asarray(cols[0], np.float32),
        action=np.asarray(cols[1], np.float32),
        reward=np.asarray(cols[2], np.float32),
        next_obs=np.asarray(cols[3], np.float32),
        terminated=np.asarray(cols[4], bool),
        truncated=np.asarray(cols[5], bool),
        episode=np.asarray(episode, np.int64),
        kind=np.asarray(kinds),
        success=np.asarray(success, bool),
    )


# ---------------------------------------------------------------- Pendulum-v1
def energy_shaping_action(obs: np.ndarray, rng: np.random.Generator, noise: float = 0.5, pump: float = 0.5):
    """Swing up by pumping energy toward the upright energy, then catch with a PD law near the top.

    Pendulum-v1 (th = 0 upright, torque u in [-2, 2]) integrates
    thddot = 15 sin th + 3 u, so E = thdot^2 / 2 + 15 (cos th - 1) is 0 upright
    at rest and dE/dt = 3 u thdot; the pump u = k thdot (0 - E) drives E to 0.
    Near the top (cos th > 0.9) a PD law u = -(10 th + 2 thdot) holds it.
    """
    c, s, w = (float(v) for v in obs)
    th = np.arctan2(s, c)
    if c > 0.9:
        u = -(10.0 * th + 2.0 * w)
    else:
        energy = 0.5 * w**2 + 15.0 * (c - 1.0)
        u = -pump * w * energy if abs(w) > 1e-2 else 2.0
    return np.clip(np.array([u + rng.normal(0.0, noise)]), -2.0, 2.0).astype(np.float32)


def pendulum_dataset(episodes: int, seed: int, noise: float = 0.5) -> Dataset:
    """Episodes of the energy-shaping controller with action noise and a pump gain drawn per episode
    (a weak pump swings up late, so the data is mediocre: mean return about -250, -150 at best)."""
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(seed)
    rows: list[tuple] = []
    episode: list[int] = []
    returns = []
    for e in range(episodes):
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        pump = float(rng.uniform(0.02, 0.5))
        total = 0.0
        while True:
            a = energy_shaping_action(obs, rng, noise, pump)
            nxt, r, term, trunc, _ = env.step(a)
            rows.append((obs, a, r, nxt, term, trunc))
            episode.append(e)
            total += r
            obs = nxt
            if term or trunc:
                break
        returns.append(total)
    cols = list(zip(*rows, strict=True))
    env.close()
    return Dataset(
        obs=np.asarray(cols[0], np.float32),
        action=np.asarray(cols[1], np.float32),
        reward=np.asarray(cols[2], np.float32),
        next_obs=np.asarray(cols[3], np.float32),
        terminated=np.asarray(cols[4], bool),
        truncated=np.asarray(cols[5], bool),
        episode=np.asarray(episode, np.int64),
        kind=np.asarray(["noisy-energy"] * episodes),
        success=np.asarray([r >= -200 for r in returns], bool),
    )
