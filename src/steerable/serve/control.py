"""``POST /v1/control/episodes`` on a built-in control world: ``steerable serve --model builtin:pointnav``.

One request runs one episode of ``steerable control eval`` on the world the
server was started with (``builtin:pointnav`` or ``builtin:stlnav``, with the
shipped diffusion policy and critic): ``{"method", "budget", "seed",
"options", "stream"}`` in, the episode's summary out (success, return, steps,
outcome, NFE, NFE per step, seconds, the path). With the same ``seed`` it is
episode 0 of ``steerable control eval --seed SEED``
(:mod:`steerable.serve.episodes` runs it).

- ``method``: one the world offers (``GET /v1/playground`` lists them: the
  methods whose controller builds on the shipped policy and runs a step on
  the world; ``dsrl`` needs a noise-policy file and is not offered).
- ``options``: the method's ``--set`` fields, checked as the CLI checks them.
  Options that name a file (``critic``, ``tgpo``) take only ``"builtin"``:
  a request never makes the server read a path.
- ``stream: true``: server-sent events, ``{"object": "steerable.event",
  "event": E}`` per event (the reset, then one ``env_step`` per control step;
  :mod:`steerable.serve.episodes` says what they hold), then the summary,
  then ``[DONE]``.

Limits: ``budget`` <= ``--max-budget``; ``--max-request-nfe`` bounds the
denoiser evaluations (refused up front for base, vgps and rti, whose worst
case is known; a guard before every denoiser call stops any run past it);
``--max-request-env-steps`` bounds the env steps, the episode's and those
of a search's forks (stopped with an error past it). The episode runs as a
job on the engine's worker thread, one at a time, never on the event loop.
"""

from __future__ import annotations

import copy
import random
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import Field

from steerable.errors import ConfigError
from steerable.serve.engine import Engine, Job
from steerable.serve.episodes import ControlWorld, Guard, GuardedDenoiser, episode, world_map, worst_nfe
from steerable.serve.gate import Metrics
from steerable.serve.openai import APIError, json_safe
from steerable.serve.routes import CLIENT_GONE, ClientGone, WorldRoutes, stream_run, submit, wait
from steerable.serve.schemas import Body, NonEmpty, Text

__all__ = ["ROUTE", "EpisodeRequest", "ControlRoutes", "create_control_app"]

ROUTE = "/v1/control/episodes"


class EpisodeRequest(Body):
    """``POST /v1/control/episodes``: one seeded episode of a control method on the served world."""

    method: NonEmpty = Field(description="A control method the world offers (GET /v1/playground lists them).")
    budget: Annotated[int, Field(ge=1, le=4096)] = Field(1, description="What it counts depends on the method.")
    seed: Annotated[int, Field(ge=0, lt=1 << 53)] | None = Field(
        None, description="Episode 0 of `steerable control eval --seed SEED` (default: drawn and returned)."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="The method's --set fields, e.g. {'beta': 1}.")
    stream: bool = Field(False, description="Server-sent events: the reset, every control step, then the summary.")
    model: Text | None = None


@dataclass
class EpisodeRun:
    """One request's episode, checked by the route before it is queued."""

    world: ControlWorld
    controller: Any
    body: EpisodeRequest
    seed: int
    guard: Guard
    job: Job | None = None

    def __call__(self) -> dict:
        emit = None
        if self.body.stream and self.job is not None:
            job = self.job

            def emit(event: dict) -> None:
                job.emit("event", event)

        return episode(self.world, self.controller, self.seed, self.guard, emit)


class ControlRoutes(WorldRoutes):
    """The control server's handlers, bound to one world and one server configuration."""

    async def models(self) -> dict:
        entry = {
            "id": self.config.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "steerable",
            "kind": "control",
            "world": self.world.env.name,
            "methods": sorted(self.world.methods),
        }
        return {"object": "list", "data": [entry]}

    def info(self) -> dict:
        """``GET /v1/playground``: the shared shape, plus ``control``: the map to draw and each method with what
        its budget counts and its options."""
        from steerable.control.registry import METHODS, method_options
        from steerable.serve.playground import base_info

        arts = {n: set(METHODS.entry(n).extra.get("artifacts", {})) for n in self.world.methods}
        env = self.world.env.clone()
        env.reset(seed=0)
        return {
            **base_info(self.config, ["control"], list(self.world.methods)),
            "control": {
                "world": self.world.env.name,
                "map": world_map(env),
                "max_steps": env.config.max_steps,
                "methods": [
                    {"name": n, "budget": b, "options": [o for o in method_options(n) if o not in arts[n]]}
                    for n, b in self.world.methods.items()
                ],
            },
        }

    async def episodes(self, body: EpisodeRequest, request: Request):
        run = self.prepare(body)
        job = Job(run, None)  # type: ignore[arg-type]
        run.job = job
        q = submit(self.engine, job)
        head = {
            "id": "ep-" + uuid.uuid4().hex[:24],
            "object": "control.episode",
            "created": int(time.time()),
            "model": self.config.model_name,
            "method": body.method,
            "budget": body.budget,
            "seed": run.seed,
        }
        if body.stream:

            def left() -> None:  # the client left mid-episode: stop its run
                run.guard.cancelled = job.cancelled = True

            return stream_run(q, lambda out: json_safe({**head, **out}), left)
        try:
            out = await wait(q, request)
        except ClientGone:
            job.cancelled = run.guard.cancelled = True
            self.metrics.cancelled.labels(ROUTE).inc()
            return Response(status_code=CLIENT_GONE)
        return json_safe({**head, **out})

    def prepare(self, body: EpisodeRequest) -> EpisodeRun:
        """The request's episode, with every server-side limit checked (a 4xx naming the field)."""
        from steerable.control.registry import METHODS

        cfg, world = self.config, self.world
        if body.model is not None and body.model != cfg.model_name:
            raise APIError(
                404, f"model {body.model!r} is not served here: use {cfg.model_name}", "model", "model_not_found"
            )
        if body.method not in world.methods:
            why = f" ({world.refused[body.method]})" if body.method in world.refused else ""
            raise APIError(
                400, f"method {body.method!r} is not offered on {cfg.model_name}{why}: use one of "
                f"{', '.join(world.methods)}", "method",
            )  # fmt: skip
        if body.budget > cfg.max_budget:
            raise APIError(400, f"budget must be <= {cfg.max_budget}, the server's --max-budget (got {body.budget})",
                           "budget")  # fmt: skip
        arts = METHODS.entry(body.method).extra.get("artifacts", {})
        for key in arts:
            if key in body.options and body.options[key] != "builtin":
                raise APIError(400, f"options.{key} takes only 'builtin' here: a request never names a file on "
                               "the server", f"options.{key}")  # fmt: skip
        guard = Guard(cfg.max_request_nfe, cfg.max_request_env_steps)
        shared = world.policies.get(body.method, world.policy)
        policy = copy.copy(shared)  # shares the weights; its denoiser charges this request's guard
        policy.denoiser = GuardedDenoiser(shared.denoiser, guard)
        controller = world.controller(body.method, body.budget, body.options, policy)
        steps = min(world.env.config.max_steps, cfg.max_request_env_steps)
        worst = worst_nfe(controller, policy, steps)
        if worst is not None and worst > cfg.max_request_nfe:
            raise APIError(
                400,
                f"{body.method} with budget {body.budget} may spend {worst} denoiser evaluations in an episode of "
                f"{steps} steps, over the server's --max-request-nfe of {cfg.max_request_nfe}: lower budget",
                "budget",
                "request_too_large",
            )
        seed = body.seed if body.seed is not None else random.getrandbits(52)
        return EpisodeRun(world, controller, body, seed, guard)


def create_control_app(model: str, config):
    """The control server: an engine of jobs only, the shared gate and error handling, and the episode route."""
    from steerable.serve.app import base_app

    try:
        world = ControlWorld.load(model)
    except ImportError as e:
        raise ConfigError(
            f"serving a control world needs the control extra ({e}): pip install 'steerable[control]'"
        ) from None
    metrics = Metrics()
    engine = Engine(None)
    app = base_app(engine, config, metrics)
    routes = ControlRoutes(engine, world, config, metrics)
    app.get("/health")(routes.health)
    app.get("/metrics")(routes.metrics_text)
    app.get("/v1/models")(routes.models)
    app.post(ROUTE)(routes.episodes)
    app.state.control = routes
    from steerable.serve.playground import mount

    mount(app, config, ["control"], routes.info())
    return engine, app
