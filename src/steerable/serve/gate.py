"""What every request meets before a route: the API key, the body limit, and the metrics of its answer.

A plain ASGI middleware, so it sees the body as it arrives: a body over the
limit is refused after reading at most the limit (a chunked upload has no
``content-length`` to check first), and the app gets the body it buffered.
Requests are counted by route template (``/v1/completions``), with one label,
``unmatched``, for every path no route serves, so scanning random paths
cannot grow ``/metrics``.

With an API key every path but ``/health`` and the playground's page and files
needs it (``/metrics`` too unless ``public_metrics``; ``/docs`` and
``/openapi.json`` describe the API, so they are behind it as well; the page
holds no data and asks ``/v1/playground`` with the key); unknown paths answer
401 before 404, so they reveal nothing.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Match

from steerable.serve.openai import dumps, error_body
from steerable.serve.playground import PUBLIC_ROUTES

log = logging.getLogger("steerable.serve")

UNMATCHED = "unmatched"


class Metrics:
    """The Prometheus series the server exports (one registry per app)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "steerable_requests", "Requests by route template and status", ["route", "status"], registry=self.registry
        )
        self.tokens = Counter("steerable_tokens", "Tokens by kind", ["kind"], registry=self.registry)
        self.latency = Histogram(
            "steerable_request_seconds",
            "Request latency by route template",
            ["route"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.queue = Gauge("steerable_queue_depth", "Requests waiting for the engine", registry=self.registry)
        self.rows = Gauge("steerable_running_rows", "Rows decoding now", registry=self.registry)
        self.cancelled = Counter(
            "steerable_cancelled", "Requests dropped because the client left", ["route"], registry=self.registry
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


async def reply(send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = dumps(error_body(status, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Gate:
    """ASGI middleware: key, body limit, metrics. ``routes`` gives the app's routes (read at request time)."""

    def __init__(
        self,
        app,
        *,
        routes: Callable[[], Sequence[BaseRoute]],
        metrics: Metrics,
        max_body_bytes: int,
        api_key: str | None = None,
        public_metrics: bool = False,
    ):
        self.app, self.routes, self.metrics = app, routes, metrics
        self.max_body, self.public_metrics = max_body_bytes, public_metrics
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    def template(self, scope: dict) -> str:
        for route in self.routes():
            match, _ = route.matches(scope)
            if match in (Match.FULL, Match.PARTIAL):  # PARTIAL: the path exists, the method does not
                return getattr(route, "path", UNMATCHED)
        return UNMATCHED

    def authorized(self, scope: dict, route: str) -> bool:
        if self.expected is None or route == "/health" or (route == "/metrics" and self.public_metrics):
            return True
        if route in PUBLIC_ROUTES:
            return True
        given = dict(scope.get("headers", ())).get(b"authorization", b"")
        return hmac.compare_digest(given, self.expected)

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.template(scope)
        t0 = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "started": False}

        async def tracked(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            if not self.authorized(scope, route):
                await reply(tracked, 401, "missing or wrong API key: send 'Authorization: Bearer KEY'")
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read(scope, receive, tracked)
                if body is None:
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, tracked)
        except Exception as e:  # a bug: say so as JSON, keep serving
            log.exception("internal error on %s", route)
            if not state["started"]:
                await reply(tracked, 500, f"internal error: {type(e).__name__}")
        finally:
            self.metrics.requests.labels(route, str(state["status"])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)

    async def _read(self, scope: dict, receive, send) -> bytes | None:
        """The whole body, or None after answering 413 (or when the client left)."""
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await reply(send, 400, "the content-length header is not a number")
                return None
            if int(declared) > self.max_body:
                await reply(send, 413, f"request body of {int(declared)} bytes is over the limit of {self.max_body}")
                return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:  # stop reading: the rest is never taken in
                await reply(
                    send,
                    413,
                    f"request body is over the limit of {self.max_body} bytes (read {size} so far)",
                    [(b"connection", b"close")],
                )
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive):
    """A ``receive`` that hands the buffered body over once, then waits on the client (for its disconnect)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
