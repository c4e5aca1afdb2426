"""``steerable serve``: the OpenAI-compatible server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import typer

from steerable.cli.app import app
from steerable.cli.common import quiet_transformers, threads
from steerable.cli.flags import command
from steerable.config import opt
from steerable.lm.loading import ModelConfig


@dataclass(frozen=True)
class ServeOptions:
    """Where the server listens and what it allows (``serve.build`` takes these as keywords)."""

    host: str = opt("127.0.0.1", "Address to bind (127.0.0.1: this machine only).", min_len=1)
    port: int = opt(8000, "Port.", ge=1, le=65535)
    steer: tuple[str, ...] = opt((), "NAME=PATH: a steering artifact requests can name (repeatable).", sep=None)
    prm: str | None = opt(None, "A PRM for scaling requests and /v1/score: builtin, or a directory.")
    api_key: str | None = opt(
        None,
        "Require 'Authorization: Bearer KEY' on every route but /health and the /playground page.",
        envvar="STEERABLE_API_KEY",
        min_len=1,
    )
    public_metrics: bool = opt(False, "With --api-key, leave /metrics open (for a scraper).")
    served_model_name: str | None = opt(None, "The name clients use (default: --model).", min_len=1)
    max_n: int = opt(64, "Most samples (n x prompts) per request.", ge=1, le=4096)
    max_tokens: int = opt(4096, "Most max_tokens a request may ask for.", ge=1, le=1_000_000)
    max_request_tokens: int = opt(
        65536,
        "Most tokens one request may generate plus score: refused up front or stopped with an error.",
        ge=1,
        le=10**9,
    )
    max_request_nfe: int = opt(
        25_600,
        "Diffusion models: most denoiser evaluations one image request may spend (n x budget x 50 steps).",
        ge=1,
        le=10**9,
    )
    max_body_mb: float = opt(1.0, "Request bodies over this get 413 (checked while reading).", gt=0, le=1024)
    prefix_cache_mb: float = opt(
        512.0,
        "Memory for the KV of finished requests, reused by later prompts that start with the same tokens "
        "(a tool loop resends its history every turn); least recently used dropped first; 0: off.",
        ge=0,
        le=1 << 20,
    )
    tool_format: Literal["auto", "agent", "chat", "off"] = opt(
        "auto",
        "How tool calls are written and read: agent (builtin:agent's lines), chat (the chat template, Hermes "
        "<tool_call> JSON), off; auto picks agent for builtin:agent, chat with a chat template, else off.",
    )


@command(app, "serve")
def serve(options: ServeOptions, model: ModelConfig) -> None:
    """An OpenAI-compatible server: /v1/completions, /v1/chat/completions, /v1/score, /metrics.

    With --model builtin:digits (a diffusion model): /v1/images/generations instead. The playground page
    (/playground, extra [playground]) calls the same endpoints from a browser.
    """
    from steerable.serve import build

    threads()
    quiet_transformers()
    o = options
    engine, api = build(
        model.model,
        list(o.steer),
        o.prm,
        model.device,
        model.dtype,
        model_name=o.served_model_name,
        api_key=o.api_key,
        public_metrics=o.public_metrics,
        max_n=o.max_n,
        max_tokens=o.max_tokens,
        max_request_tokens=o.max_request_tokens,
        max_request_nfe=o.max_request_nfe,
        max_body_bytes=int(o.max_body_mb * (1 << 20)),
        prefix_cache_mb=o.prefix_cache_mb,
        tool_format=o.tool_format,
    )
    import uvicorn

    from steerable.serve.playground import PLOTLY_MISSING, plotly_js

    typer.echo(f"serving {o.served_model_name or model.model} on http://{o.host}:{o.port}/v1", err=True)
    page = f"http://{o.host}:{o.port}/playground" if plotly_js() else f"off ({PLOTLY_MISSING})"
    typer.echo(f"playground: {page}", err=True)
    uvicorn.run(api, host=o.host, port=o.port, log_level="warning", timeout_graceful_shutdown=30)
