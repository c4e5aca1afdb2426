"""An OpenAI-compatible HTTP server over the engine (``steerable serve``; extra ``[serve]``).

Routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``,
``POST /v1/score`` (the PRM), ``GET /health``, ``GET /metrics`` (Prometheus text),
the playground's page (``GET /playground``, :mod:`steerable.serve.playground`),
and FastAPI's ``/docs`` and ``/openapi.json`` (generated from the request models
in :mod:`steerable.serve.schemas`). A diffusion model (``--model builtin:digits``)
gets ``POST /v1/images/generations`` instead (:mod:`steerable.serve.images`), on
the same :func:`base_app`.

Two extra body fields:

- ``steering``: ``"NAME"`` or ``{"name": NAME, "strength": S}``, an artifact
  loaded with ``--steer NAME=PATH`` (a vector, a direction or a controller);
- ``scaling``: ``{"method": "pf", "budget": 8, "scorer": "prm", "delimiter":
  "\\n", "max_step_tokens": 64, "options": {...}}``, any method of
  ``steerable scale``; the response's text is the chosen sample, and a
  ``steerable`` field holds the answer, every candidate with its score and
  weight, and the cost.

Bad input is a 4xx with an OpenAI-style error body naming the field, never a
500. A model without a chat template gets its messages' contents joined in
order (the built-in world's raw-prompt convention), so chat requests work on
it too.

This module assembles the app: :mod:`~steerable.serve.gate` (key, body limit,
metrics), :mod:`~steerable.serve.routes` (the handlers),
:mod:`~steerable.serve.openai` (response shapes) and
:mod:`~steerable.serve.schemas` (request bodies).
"""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from steerable.config import check, opt
from steerable.serve.engine import Engine


@dataclass
class ServeConfig:
    """What a server allows; every limit holds with or without an API key."""

    model_name: str = opt("builtin", "The name clients use.")
    api_key: str | None = opt(
        None, "Require 'Authorization: Bearer KEY' on every route but /health and the /playground page."
    )
    public_metrics: bool = opt(False, "With an API key, leave /metrics open (for a scraper without the key).")
    max_n: int = opt(64, "Most samples (n x prompts) per request.", ge=1, le=4096)
    max_tokens: int = opt(4096, "Most max_tokens a request may ask for.", ge=1, le=1 << 20)
    default_max_tokens: int = opt(256, "max_tokens of chat requests that give none (completions: 16).", ge=1)
    max_body_bytes: int = opt(1 << 20, "Request bodies over this many bytes get 413 (checked while reading).", ge=1)
    max_budget: int = opt(64, "Most scaling budget per request.", ge=1, le=4096)
    max_request_tokens: int = opt(
        65536,
        "Most tokens one request may generate plus score (echoed prompts, PRM partials, a scaling run's "
        "steps and scores): refused up front where the worst case is known, stopped with an error where not.",
        ge=1,
    )
    max_request_nfe: int = opt(
        25_600,
        "Most denoiser evaluations one image request may spend (n x scaling budget x 50 steps at most, a diffusion "
        "model's cap in place of --max-request-tokens): refused up front, stopped with an error past it.",
        ge=1,
        le=10**9,
    )
    max_request_env_steps: int = opt(
        4096,
        "Most environment steps (every copy's) one agent scaling request may take: stopped with an error past it.",
        ge=1,
        le=10**7,
    )
    tool_format: Literal["auto", "agent", "chat", "off"] = opt(
        "auto",
        "How tool calls are written and read: agent (the built-in agent model's lines), chat (the chat template, "
        "Hermes <tool_call> JSON), off, or auto (agent for builtin:agent, chat with a chat template, else off).",
    )
    # name -> scorer for scaling and /v1/score (built by `build`, not a user setting)
    scorers: dict[str, Any] = dataclasses.field(default_factory=dict, metadata={"help": "Loaded scorers."})

    def __post_init__(self) -> None:
        check(self, "serve: ")
        if self.default_max_tokens > self.max_tokens:
            self.default_max_tokens = self.max_tokens


def create_app(engine: Engine, config: ServeConfig):
    from steerable.serve.gate import Metrics
    from steerable.serve.routes import Routes

    metrics = Metrics()

    def on_step(rows: int, depth: int) -> None:
        metrics.queue.set(depth)
        metrics.rows.set(rows)

    engine.on_step = on_step
    app = base_app(engine, config, metrics)
    routes = Routes(engine, config, metrics)
    app.get("/health")(routes.health)
    app.get("/metrics")(routes.metrics_text)
    app.get("/v1/models")(routes.models)
    app.post("/v1/completions")(routes.completions)
    app.post("/v1/chat/completions")(routes.chat)
    app.post("/v1/score")(routes.score)
    from steerable.serve.playground import lm_info, mount

    mount(app, config, ["steering", "search"], lm_info(engine, config))
    return app


def base_app(engine: Engine, config: ServeConfig, metrics):
    """A FastAPI app with no routes yet: the engine's lifespan, the gate (key, body limit, metrics) and the
    error handlers that turn every refusal into an OpenAI-style 4xx body (shared by the text and image servers)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    from steerable.serve.gate import Gate
    from steerable.serve.openai import APIError, describe, dumps, error_body

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        # uvicorn has let in-flight requests finish by now; the worker drains what is left and ends
        await asyncio.get_running_loop().run_in_executor(None, engine.stop)

    class SafeJSON(JSONResponse):
        def render(self, content: Any) -> bytes:
            return dumps(content).encode()

    app = FastAPI(title="steerable", lifespan=lifespan, default_response_class=SafeJSON)
    app.add_middleware(
        Gate,
        routes=lambda: app.routes,
        metrics=metrics,
        max_body_bytes=config.max_body_bytes,
        api_key=config.api_key,
        public_metrics=config.public_metrics,
    )

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return SafeJSON(error_body(e.status, e.message, e.param, e.code), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        param, message = describe(e.errors())
        return SafeJSON(error_body(400, message, param), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException):
        message = str(e.detail)
        cause = e.__cause__
        if isinstance(cause, RecursionError):
            message = "the body is nested too deep to parse: flatten it"
        elif isinstance(cause, ValueError) and "digits" in str(cause):
            message = "the body holds an integer too long to parse (over 4,300 digits)"
        elif e.status_code == 404:
            message = f"no route {request.url.path!r}: see /docs"
        elif e.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return SafeJSON(error_body(e.status_code, message), status_code=e.status_code, headers=e.headers)

    return app
