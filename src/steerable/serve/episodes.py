"""One control episode as the server runs it: the served world, the request's guard, and what is drawn.

:func:`episode` is :func:`~steerable.control.evaluate.run_block`'s loop for one
row (episode 0 of ``steerable control eval --seed SEED``: the env starts at
``item_seed(seed, 0)``, the controller samples from ``stream(seed, 0)``), each
env step charged to a :class:`Guard`, which also charges every denoiser call
(:class:`GuardedDenoiser` on a copy of the policy). With ``emit`` it hands
over ``{"type": "reset", "map", "pos", "goal", "max_steps"}`` once, then per
control step ``{"type": "env_step", "t", "step", "pos", "positions",
"reward", "return", "nfe", ...}`` with, for a controller that searches over
chunks (vgps, search), ``candidates`` (each scored plan as an xy path),
``scores`` and ``chosen`` (the index of the executed plan), read through
:class:`~steerable.search.watch.Watch` on the controller's process and scorer
(so the watched episode is the same episode), and for rti ``plan`` (the
warm-started chunk as an xy path).

A planned xy path is the chunk's actions integrated from the current position
and velocity by the world's dynamics in still air (no wind, no gust): the
wind is unobserved, so this is what the policy planned, not where the env
will take it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from steerable.errors import SteerableError
from steerable.serve.openai import APIError, json_safe
from steerable.serve.scaling import Cancelled

#: the built-in worlds served (those with a shipped policy)
WORLDS = ("pointnav", "stlnav")
#: how many decimals a coordinate keeps in the JSON
DIGITS = 4


def is_control(model: str) -> bool:
    return model.startswith("builtin:") and model.removeprefix("builtin:") in WORLDS


@dataclass
class Guard:
    """Stops an episode when its client has left, or before it would pass the request's NFE or env-step cap."""

    nfe_cap: int
    step_cap: int
    nfe: int = 0
    steps: int = 0
    cancelled: bool = False

    def charge_nfe(self, rows: int) -> None:
        if self.cancelled:
            raise Cancelled("the client closed the connection")
        if self.nfe + rows > self.nfe_cap:
            raise APIError(
                400,
                f"the episode needed more than the server's --max-request-nfe of {self.nfe_cap} denoiser "
                f"evaluations ({self.nfe} spent): lower budget",
                "budget",
                "request_too_large",
            )
        self.nfe += rows

    def charge_steps(self, n: int, where: str = "the episode") -> None:
        if self.cancelled:
            raise Cancelled("the client closed the connection")
        if self.steps + n > self.step_cap:
            raise APIError(
                400,
                f"{where} passed the server's --max-request-env-steps of {self.step_cap} environment steps "
                f"({self.steps} taken before): the episode was stopped",
                None,
                "request_too_large",
            )
        self.steps += n


class GuardedDenoiser(torch.nn.Module):
    """The policy's denoiser behind a :class:`Guard`: every call is charged before it runs."""

    def __init__(self, inner: torch.nn.Module, guard: Guard):
        super().__init__()
        self.inner, self.guard = inner, guard

    @property
    def config(self):
        return self.inner.config

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs):
        self.guard.charge_nfe(len(x))
        return self.inner(x, t, **kwargs)


def _xy(p) -> list[float]:
    return [round(float(p[0]), DIGITS), round(float(p[1]), DIGITS)]


def planned_path(config, obs: np.ndarray, actions: np.ndarray) -> list[list[float]]:
    """Env actions [H, 2] integrated from ``obs``'s position and velocity in still air: H + 1 xy points."""
    p, v = np.asarray(obs[:2], np.float64), np.asarray(obs[2:4], np.float64)
    out = [_xy(p)]
    for a in np.clip(np.asarray(actions, np.float64), -1.0, 1.0):
        v = config.damping * v + config.dt * a
        p = p + config.dt * v
        out.append(_xy(p))
    return out


def world_map(env) -> dict:
    """What to draw: the arena, the obstacle disks, the goal's radius and (STLNav) region A with its deadline."""
    from steerable.control.worlds.envs import STLSpec

    c = env.config
    out: dict[str, Any] = {
        "world": env.name,
        "arena": [float(v) for v in c.arena],
        "obstacles": [[float(v) for v in ob] for ob in c.obstacles],
        "goal_radius": float(c.goal_radius),
        "regions": [],
    }
    spec = getattr(env, "spec", None)
    if isinstance(spec, STLSpec):
        x, y, r = spec.region
        out["regions"].append({"name": "A", "x": x, "y": y, "r": r, "by": spec.reach_by})
    return out


def worst_nfe(controller, policy, steps: int) -> int | None:
    """The most denoiser evaluations an episode of ``steps`` env steps can spend, where it is known."""
    from steerable.control.steering.controller import Controller
    from steerable.control.steering.rti import RTI
    from steerable.control.steering.vgps import VGPS

    n = policy.steps_inference
    preds = math.ceil(steps / (controller.execute or policy.execute))
    if isinstance(controller, RTI):  # one cold prediction, then one action per warm-started K' steps
        return n + (steps - 1) * controller.k_prime
    if isinstance(controller, VGPS):
        return preds * controller.k * n
    if type(controller) is Controller:
        return preds * n
    return None


class Chunks:
    """Turns a controller's :class:`~steerable.search.watch.Watch` events into one control step's candidates."""

    def __init__(self, env_config, execute: int):
        self.config, self.execute = env_config, execute
        self.plans: dict[int, list] = {}  # state id -> its rows' Plans at its last step
        self.scored: tuple[int, list[float]] | None = None  # (state, scores per row) of the last score event
        self.result = None  # the strategy's last Result

    @staticmethod
    def show(process, state) -> list | None:
        """A control state's rows are its Plans (kept as objects: these events are read here, never sent)."""
        plans = getattr(state, "plans", None)
        return None if plans is None else list(plans)

    def emit(self, event: dict) -> None:
        if event["type"] == "step" and "previews" in event:
            self.plans[event["state"]] = event["previews"]
        elif event["type"] == "score" and event["state"] in self.plans:
            rows = self.plans[event["state"]]
            scores = [float("nan")] * len(rows)
            for r, s in zip(event["rows"], event["scores"], strict=True):
                if r >= 0:
                    scores[r] = s
            self.scored = (event["state"], scores)

    def take(self, policy) -> dict:
        """The last scored plans as xy paths with their scores and the executed one's index; then forget them."""
        out: dict[str, Any] = {}
        if self.scored is not None:
            state, scores = self.scored
            plans = self.plans[state]
            out["candidates"] = [self.path(policy, p) for p in plans]
            out["scores"] = [round(s, 6) if math.isfinite(s) else None for s in scores]
            chosen = self.result.sample if self.result is not None else None
            out["chosen"] = next((i for i, p in enumerate(plans) if p is chosen), -1)
        self.plans, self.scored, self.result = {}, None, None
        return out

    def path(self, policy, plan) -> list[list[float]]:
        """A plan's chunks as one xy path: a deeper plan's next chunk was planned after ``execute`` actions of the
        one before (run in its fork), so each chunk but the last adds only those."""
        acts = [policy.to_env(policy.future(c[None])[0]) for c in plan.chunks]
        acts = [a[: self.execute] for a in acts[:-1]] + acts[-1:]
        return planned_path(self.config, plan.obs, np.concatenate(acts))


class Recorded:
    """A strategy whose last :class:`~steerable.search.result.Result` is kept (which plan was executed)."""

    def __init__(self, inner, chunks: Chunks):
        self.inner, self.chunks = inner, chunks

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def run(self, *args, **kwargs):
        self.chunks.result = self.inner.run(*args, **kwargs)
        return self.chunks.result


def watch(controller, env_config) -> Chunks | None:
    """Wrap a searching controller's process, scorer and strategy so each step's scored plans can be read."""
    from steerable.search.watch import Watch

    names = [n for n in ("strategy", "search") if hasattr(getattr(controller, n, None), "run")]
    process = getattr(controller, "process", None)
    if not names or process is None or getattr(controller, "scorer", None) is None:
        return None
    chunks = Chunks(env_config, getattr(process, "execute", None) or controller.execute or controller.policy.execute)
    w = Watch(chunks.emit, chunks.show)
    controller.process = w.process(process)
    controller.scorer = w.scorer(controller.scorer)
    setattr(controller, names[0], Recorded(getattr(controller, names[0]), chunks))
    return chunks


@dataclass
class ControlWorld:
    """The served world: its env (only cloned), its shipped policy and the methods it offers."""

    model: str
    env: Any
    policy: Any
    policies: dict[str, Any] = field(default_factory=dict)  # method -> its policy where it is not ``policy`` (tgpo)
    methods: dict[str, str] = field(default_factory=dict)  # name -> what its budget counts
    refused: dict[str, str] = field(default_factory=dict)  # name -> why it is not offered

    @classmethod
    def load(cls, model: str) -> ControlWorld:
        from steerable.control.registry import METHODS, EvalConfig, load_policy
        from steerable.control.worlds.envs import make_env

        env = make_env(model)
        policy = load_policy(EvalConfig(env=model))
        world = cls(model, env, policy)
        for name, budget, _ in METHODS.table():
            try:
                world.policies[name] = load_policy(EvalConfig(env=model, method=name))
            except Exception:  # noqa: BLE001 - the shipped policy serves it; the trial says whether it runs
                world.policies[name] = policy
            try:  # offered if it builds on the shipped files and runs one control step here
                world.trial(name)
            except Exception as e:  # noqa: BLE001 - any failure of the probe means: not offered, and why
                world.refused[name] = str(getattr(e, "message", e)).split("\n")[0]
                continue
            world.methods[name] = budget
        return world

    def controller(self, method: str, budget: int, options: dict, policy=None):
        """``method``'s controller as ``steerable control eval`` builds it (``policy``: a guarded copy)."""
        from steerable.control.registry import EvalConfig, make_controller

        try:
            cfg = EvalConfig(env=self.model, method=method, budget=budget)
        except SteerableError as e:
            raise APIError(400, f"budget: {e}", "budget") from None
        try:
            return make_controller(cfg, policy or self.policies.get(method, self.policy), options)
        except SteerableError as e:
            raise APIError(400, f"options: {e}", "options") from None

    def trial(self, method: str) -> None:
        env = self.env.clone()
        obs, _ = env.reset(seed=0)
        self.controller(method, 2, {}).act([0], [[obs]], [env])  # budget 2: ptp's M > 1 checks its policy


def episode(world: ControlWorld, controller, seed: int, guard: Guard, emit=None) -> dict:
    """Episode 0 of ``steerable control eval --seed SEED`` (:func:`~steerable.control.evaluate.run_block`'s loop
    for one row), each env step charged to ``guard``; ``emit`` gets the reset and one event per control step."""
    from steerable.streams import item_seed, stream

    env, policy, cfg = world.env.clone(), controller.policy, world.env.config
    chunks = watch(controller, cfg) if emit is not None else None
    obs, info = env.reset(seed=item_seed(seed, 0))
    controller.reset([stream(seed, 0)])
    seen, path = [obs], [_xy(info["pos"])]
    if emit is not None:
        emit(
            {"type": "reset", "map": world_map(env), "pos": path[0], "goal": _xy(env.goal), "max_steps": cfg.max_steps}
        )
    total, k, t0, ended = 0.0, 0, time.perf_counter(), False
    while not ended:
        nfe, forks, root = controller.nfe[0], controller.fork_steps[0], seen[-1]
        actions = controller.act([0], [seen], [env])[0]
        guard.charge_steps(controller.fork_steps[0] - forks, "a search's forks")
        reward, start = 0.0, len(path)
        for a in actions:
            guard.charge_steps(1)
            obs, rew, term, trunc, info = env.step(a)
            seen.append(obs)
            reward += float(rew)
            path.append(_xy(info["pos"]))
            if term or trunc:
                ended = True
                break
        total += reward
        k += 1
        if emit is not None:
            event = {
                "type": "env_step", "t": len(path) - 1, "step": k, "pos": path[-1], "positions": path[start:],
                "reward": round(reward, 6), "return": round(total, 6), "nfe": controller.nfe[0] - nfe,
            }  # fmt: skip
            if chunks is not None:
                event.update(chunks.take(policy))
            prev = getattr(controller, "prev", None)
            if prev is not None and prev[0] is not None:  # rti: the chunk it just denoised from its warm start
                event["plan"] = planned_path(cfg, root, policy.to_env(policy.future(prev[0][None])[0]))
            emit(json_safe(event))
    steps = len(path) - 1
    out = {
        "success": bool(info.get("success", False)),
        "return": round(total, 4),
        "steps": steps,
        "outcome": str(info.get("outcome", "")),
        "nfe": controller.nfe[0],
        "nfe_per_step": round(controller.nfe[0] / max(1, steps), 3),
        "scorer_calls": controller.scorer_calls[0],
        "predictions": controller.predictions[0],
        "fork_steps": controller.fork_steps[0],
        "seconds": round(time.perf_counter() - t0, 4),
        "path": path,
    }
    if info.get("satisfied") is not None:
        out["satisfied"] = bool(info["satisfied"])
    return out
