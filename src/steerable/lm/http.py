"""Generation and scoring over any OpenAI-compatible server (vLLM, SGLang, ``steerable serve``).

- :class:`HTTPClient`: POST with a concurrency limit, retries with exponential
  backoff on connection errors, timeouts, 429 and 5xx; a 4xx is the caller's
  mistake and fails at once with the server's message.
- :class:`HTTPGenerator`: the generator protocol (``generate``), ``n`` per request;
  and the step protocol (:class:`~steerable.lm.base.StepGenerator`) over
  :class:`HTTPRows`, so :class:`~steerable.search.lm_process.LMProcess` runs
  every search strategy over a server unchanged.

A step is one request per live row that continues the row's text up to a stop
string: raw completions (``prompt`` = prompt + text so far), or chat with
vLLM's ``continue_final_message`` (``step_mode="chat"``).
``include_stop_str_in_output`` keeps the stop string, and ``stop_reason`` tells
a stop string from EOS (without it: the text ending in the stop string). Every
row has its own seed stream (forks branch off, as in the local generator), so
a run is reproducible on a server that honours ``seed``. On our own server a
step for all rows goes as one request (each prompt of a request samples from
its own stream there). A remote PRM is :class:`steerable.reward.http.HTTPScorer`.

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
from dataclasses import dataclass, field

from steerable.errors import ConfigError, InputError, SteerableError
from steerable.lm.types import Completion, SamplingParams, StepOutput, Usage
from steerable.streams import forks, mix


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


@dataclass
class HTTPRows:
    """Rows continued over a server: each row's prompt, text so far, seed, EOS flag and generated tokens."""

    prompts: list[str]
    texts: list[str]
    seeds: list[int]
    finished: list[bool] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # generated tokens per row (from the server's usage)

    def __len__(self) -> int:
        return len(self.texts)

    def seed(self, seed: int) -> None:
        self.seeds = [mix(seed, r) for r in range(len(self))]

    def select(self, rows: Sequence[int]) -> HTTPRows:
        rows = list(rows)
        if not rows or min(rows) < 0 or max(rows) >= len(self):
            raise InputError(f"row index out of range for a batch of {len(self)}: {rows}")
        seeds = forks(self.seeds, rows, [len(t) for t in self.texts], mix)
        pick = lambda xs: [xs[r] for r in rows]  # noqa: E731
        return HTTPRows(pick(self.prompts), pick(self.texts), seeds, pick(self.finished), pick(self.tokens))


class HTTPGenerator:
    """``generate`` over ``/v1/completions`` (or ``/v1/chat/completions`` for chat messages), and steps over
    :class:`HTTPRows` (``step_mode``: ``completions``, or ``chat`` continuing the assistant message)."""

    remote = True  # every step is a round trip

    def __init__(
        self, client: HTTPClient, model: str | None = None, server: str | None = None, step_mode: str = "completions"
    ):
        if step_mode not in ("completions", "chat"):
            raise ConfigError(f"step_mode must be completions or chat (got {step_mode!r})")
        self.step_mode = step_mode
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

    # ---- steps (the StepGenerator protocol) ------------------------------------------------------

    def start(self, prompts: Sequence, n: int = 1) -> HTTPRows:
        """``n`` rows per prompt, prompt-major, each on a random seed until :meth:`HTTPRows.seed`."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError("steps over a server continue text prompts: pass at least one string")
        if n < 1:
            raise ConfigError(f"n must be >= 1 (got {n})")
        rows = [p for p in prompts for _ in range(n)]
        base = random.getrandbits(62)
        k = len(rows)
        return HTTPRows(rows, [""] * k, [mix(base, r) for r in range(k)], [False] * k, [0] * k)

    def append(self, seqs: HTTPRows, texts: Sequence[str]) -> None:
        if len(texts) != len(seqs):
            raise InputError(f"append needs one text per row: got {len(texts)} for {len(seqs)} rows")
        for r, text in enumerate(texts):
            if text:
                seqs.texts[r] += text
                seqs.finished[r] = False

    @staticmethod
    def concat(batches: Sequence[HTTPRows]) -> HTTPRows:
        if not batches:
            raise InputError("concat needs at least one batch")
        cat = lambda f: [x for b in batches for x in getattr(b, f)]  # noqa: E731
        return HTTPRows(cat("prompts"), cat("texts"), cat("seeds"), cat("finished"), cat("tokens"))

    def texts(self, seqs: HTTPRows) -> list[str]:
        return list(seqs.texts)

    def generated_tokens(self, seqs: HTTPRows, row: int) -> int:
        return seqs.tokens[row]

    def step(
        self,
        seqs: HTTPRows,
        params: SamplingParams,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        rows: Sequence[int] | None = None,
    ) -> StepOutput:
        """One request per live row (one for all rows on our server) continuing its text up to a stop string,
        EOS or ``max_tokens``. Without stop strings a ``stop`` finish is EOS."""
        stop = tuple(params.stop if stop is None else stop)
        cap = params.max_new_tokens if max_tokens is None else max_tokens
        if cap < 1:
            raise ConfigError(f"max_tokens must be >= 1 (got {cap})")
        wanted = set(range(len(seqs)) if rows is None else rows)
        live = [r for r in range(len(seqs)) if r in wanted and not seqs.finished[r]]
        before = self.usage
        new: list[str] = [""] * len(seqs)
        reasons: list[str | None] = [None] * len(seqs)
        if live:
            if self.step_mode == "completions" and self.server == "steerable":
                results = self._request_many(seqs, live, cap, params, stop)
            else:
                futures = [self.client.pool.submit(self._request, seqs, r, cap, params, stop) for r in live]
                results = [f.result() for f in futures]
            for r, res in results:
                if res["usage"] is not None:
                    res["tokens"] = self.add_usage(res["usage"]).generated_tokens
                seqs.texts[r] += res["text"]
                seqs.tokens[r] += res["tokens"]
                new[r] = res["text"]
                reasons[r] = "length"
                if res["finish"] == "stop":
                    at_stop = any(res["text"].endswith(s) for s in stop)
                    # EOS: a "stop" that is not a stop string (vLLM and our server say which in stop_reason)
                    eos = not stop or (res["stop_reason"] is None if res["stop_reason"] != "" else not at_stop)
                    reasons[r] = "eos" if eos else "stop"
                    seqs.finished[r] = seqs.finished[r] or eos
        return StepOutput(
            texts=tuple(new),
            token_ids=tuple(() for _ in new),
            logprobs=tuple(() for _ in new),
            finish_reasons=tuple(reasons),
            usage=self.usage - before,
        )

    def _request(
        self, seqs: HTTPRows, r: int, cap: int, params: SamplingParams, stop: tuple[str, ...]
    ) -> tuple[int, dict]:
        body = {"model": self.model, "max_tokens": cap, "n": 1, **params_body(params)}
        body["seed"] = mix(seqs.seeds[r], len(seqs.texts[r]))
        if stop:
            body["stop"] = list(stop)
            body["include_stop_str_in_output"] = True
        text = seqs.texts[r]
        if self.step_mode == "chat":
            msgs = [{"role": "user", "content": seqs.prompts[r]}]
            if text:
                msgs.append({"role": "assistant", "content": text})
                body.update(continue_final_message=True, add_generation_prompt=False)
            out = self.client.post("/chat/completions", {**body, "messages": msgs})
            c = out["choices"][0]
            got = c["message"]["content"] or ""
        else:
            out = self.client.post("/completions", {**body, "prompt": seqs.prompts[r] + text})
            c = out["choices"][0]
            got = c["text"]
        finish = {"text": got, "finish": c.get("finish_reason"), "stop_reason": c.get("stop_reason", "")}
        return r, {**finish, "usage": out.get("usage") or {}}

    def _request_many(
        self, seqs: HTTPRows, rows: list[int], cap: int, params: SamplingParams, stop: tuple[str, ...]
    ) -> list[tuple[int, dict]]:
        """One completions request for every row (our server: each prompt samples from its own stream)."""
        body = {"model": self.model, "max_tokens": cap, "n": 1, "logprobs": 0, **params_body(params)}
        body["seed"] = mix(seqs.seeds[rows[0]], len(seqs.texts[rows[0]]), len(rows))
        if stop:
            body["stop"] = list(stop)
            body["include_stop_str_in_output"] = True
        out = self.client.post("/completions", {**body, "prompt": [seqs.prompts[r] + seqs.texts[r] for r in rows]})
        choices = sorted(out["choices"], key=lambda c: c["index"])
        self.add_usage(out.get("usage") or {})
        return [
            (
                r,
                {
                    "text": c["text"],
                    "finish": c.get("finish_reason"),
                    "stop_reason": c.get("stop_reason", ""),
                    "tokens": len((c.get("logprobs") or {}).get("tokens") or []),
                    "usage": None,
                },
            )
            for r, c in zip(rows, choices, strict=True)
        ]
