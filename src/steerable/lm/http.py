"""Generation and scoring over any OpenAI-compatible server (vLLM, SGLang, ``steerable serve``).

- :class:`HTTPClient`: POST with a concurrency limit, retries with exponential
  backoff on connection errors, timeouts, 429 and 5xx; a 4xx is the caller's
  mistake and fails at once with the server's message.
- :class:`HTTPGenerator`: the generator protocol (``generate``), ``n`` per request.

The step-wise process over a server is :class:`steerable.search.http.HTTPProcess`;
a remote PRM is :class:`steerable.reward.http.HTTPScorer`.

Usage comes from the server's ``usage``: ``prompt_tokens`` counts every prefix
sent again (what a server without prefix caching prefills), ``completion_tokens``
what it generated.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from steerable.errors import ConfigError, InputError, SteerableError
from steerable.lm.types import Completion, SamplingParams, Usage
from steerable.streams import mix


class RemoteError(SteerableError):
    """The server could not be reached, or answered with an error."""


class HTTPClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 0.5,
        concurrency: int = 32,
    ):
        import httpx

        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"a server URL starts with http:// or https:// (got {base_url!r})")
        self.base_url = base_url.rstrip("/")
        self.retries, self.backoff = retries, backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._http = httpx.Client(timeout=timeout, headers=headers, limits=limits)
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="steerable-http")
        self.retried = 0

    def post(self, path: str, body: dict) -> dict:
        import httpx

        url = self.base_url + path
        for attempt in range(self.retries + 1):
            try:
                r = self._http.post(url, json=body)
            except (httpx.TransportError, httpx.TimeoutException) as e:
                err = f"{type(e).__name__}: {e}"
            else:
                if r.status_code < 400:
                    return r.json()
                try:
                    msg = r.json()["error"]["message"]
                except Exception:
                    msg = r.text[:200]
                if r.status_code not in (408, 429) and r.status_code < 500:
                    raise RemoteError(f"{url} answered {r.status_code}: {msg}")
                err = f"{r.status_code}: {msg}"
            if attempt < self.retries:
                self.retried += 1
                time.sleep(self.backoff * 2**attempt * (0.5 + random.random()))
        raise RemoteError(f"{url} failed after {self.retries + 1} tries ({err}): is the server up?")

    def models(self) -> list[dict]:
        """The server's ``/models`` entries (``id``, ``owned_by``, ...)."""
        import httpx

        try:
            r = self._http.get(self.base_url + "/models")
            r.raise_for_status()
            return [m for m in r.json()["data"] if "id" in m]
        except (httpx.HTTPError, KeyError, ValueError, TypeError) as e:
            raise RemoteError(f"cannot list models at {self.base_url} ({e}): is the server up?") from None


def params_body(params: SamplingParams) -> dict:
    body = {"temperature": params.temperature, "top_p": params.top_p}
    if params.top_k:
        body["top_k"] = params.top_k
    if params.ignore_eos:
        body["ignore_eos"] = True
    return body


class HTTPGenerator:
    """``generate`` over ``/v1/completions`` (or ``/v1/chat/completions`` for chat messages)."""

    def __init__(self, client: HTTPClient, model: str | None = None, server: str | None = None):
        self.client = client
        if model is None or server is None:
            entries = client.models()
            if not entries:
                raise RemoteError(f"{client.base_url} serves no model")
            entry = next((m for m in entries if m["id"] == model), entries[0] if model is None else None)
            if entry is None:
                have = ", ".join(m["id"] for m in entries)
                raise RemoteError(f"{client.base_url} does not serve {model!r}: it serves {have}")
            model = entry["id"]
            server = server or ("steerable" if entry.get("owned_by") == "steerable" else "openai")
        self.model = model
        # our server gives every prompt of a request its own random stream, so a step can go as one request;
        # vLLM seeds every prompt of a request alike, so forked particles there need a request each
        self.server = server
        self.usage = Usage()
        self._lock = threading.Lock()
        self.tokenizer = None  # the server tokenizes

    def add_usage(self, u: dict) -> Usage:
        got = Usage(
            prompt_tokens=int(u.get("prompt_tokens", 0)),
            generated_tokens=int(u.get("completion_tokens", 0)),
            forward_tokens=int(u.get("prompt_tokens", 0)) + int(u.get("completion_tokens", 0)),
        )
        with self._lock:
            self.usage = self.usage + got
        return got

    def _one(self, i: int, prompt, params: SamplingParams) -> list[Completion]:
        body = {"model": self.model, "n": params.n, "max_tokens": params.max_new_tokens, **params_body(params)}
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = mix(params.seed, i)
        if isinstance(prompt, list):
            out = self.client.post("/chat/completions", {**body, "messages": prompt, "logprobs": True})
            texts = [c["message"]["content"] for c in out["choices"]]
            lps = [[t["logprob"] for t in ((c.get("logprobs") or {}).get("content") or [])] for c in out["choices"]]
        elif isinstance(prompt, str):
            out = self.client.post("/completions", {**body, "prompt": prompt, "logprobs": 0})
            texts = [c["text"] for c in out["choices"]]
            lps = [list((c.get("logprobs") or {}).get("token_logprobs") or []) for c in out["choices"]]
        else:
            raise InputError(f"a prompt must be a string or chat messages (got {type(prompt).__name__})")
        usage = self.add_usage(out.get("usage") or {})
        return [
            Completion(i, t, (), tuple(lp), c.get("finish_reason") or "stop", usage if k == 0 else Usage())
            for k, (t, lp, c) in enumerate(zip(texts, lps, out["choices"], strict=True))
        ]

    def generate(self, prompts: Sequence, params: SamplingParams) -> list[Completion]:
        if isinstance(prompts, str):
            prompts = [prompts]
        futures = [self.client.pool.submit(self._one, i, p, params) for i, p in enumerate(prompts)]
        return [c for f in futures for c in f.result()]
