"""Generation and scoring over any OpenAI-compatible server (vLLM, SGLang, ``steerable serve``).

- :class:`HTTPClient`: POST with a concurrency limit, retries with exponential
  backoff on connection errors, timeouts, 429 and 5xx; a 4xx is the caller's
  mistake and fails at once with the server's message.
- :class:`HTTPGenerator`: the generator protocol (``generate``), ``n`` per request.
- :class:`HTTPProcess`: the step-wise :class:`~steerable.search.process.Process`
  every scaling strategy runs on. A step is one request per live row that
  continues the row's text up to the delimiter: raw completions (``prompt`` =
  prompt + text so far), or chat with vLLM's ``continue_final_message``
  (``mode="chat"``). ``include_stop_str_in_output`` keeps the delimiter, and
  ``stop_reason`` tells a delimiter from EOS (without it: the text ending in
  the delimiter). Every row has its own seed stream (forks branch off, as in
  the local generator), so a run is reproducible on a server that honours
  ``seed``.
- :class:`HTTPScorer`: a remote PRM through ``POST /v1/score``.

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
from steerable.lm.types import Completion, SamplingParams, Usage
from steerable.search.process import TokenBudgeted


class RemoteError(SteerableError):
    """The server could not be reached, or answered with an error."""


def _mix(*values: int) -> int:
    from steerable.lm.sampling import mix

    return mix(*values)


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


def _params_body(params: SamplingParams) -> dict:
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
        body = {"model": self.model, "n": params.n, "max_tokens": params.max_new_tokens, **_params_body(params)}
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = _mix(params.seed, i)
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


@dataclass
class HTTPState:
    prompt: str
    texts: list[str]
    seeds: list[int]
    finished: list[bool] = field(default_factory=list)  # EOS
    capped: list[bool] = field(default_factory=list)  # max_steps / max_tokens / budget
    steps: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # generated tokens per row (from usage)


@dataclass
class HTTPProcess(TokenBudgeted):
    """The language-model process over a server; the same knobs as ``LMProcess``."""

    generator: HTTPGenerator
    delimiter: str = "\n\n"
    params: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.8))
    step_tokens: int | None = None
    max_step_tokens: int = 256
    max_steps: int = 40
    max_tokens: int = 2048
    token_budget: int | None = None
    mode: str = "completions"  # or "chat": continue the assistant message (vLLM's continue_final_message)

    def __post_init__(self) -> None:
        self._run_origin = 0
        if self.mode not in ("completions", "chat"):
            raise ConfigError(f"mode must be completions or chat (got {self.mode!r})")
        if not self.delimiter and self.step_tokens is None:
            raise ConfigError("an LM process needs a non-empty delimiter or step_tokens")

    def init(self, prompt: str, n: int, seed: int | None = None) -> HTTPState:
        base = seed if seed is not None else random.getrandbits(62)
        return HTTPState(
            prompt, [""] * n, [_mix(base, r) for r in range(n)], [False] * n, [False] * n, [0] * n, [0] * n
        )

    def size(self, state: HTTPState) -> int:
        return len(state.texts)

    def is_terminal(self, state: HTTPState) -> list[bool]:
        return [f or c for f, c in zip(state.finished, state.capped, strict=True)]

    def _request(self, state: HTTPState, r: int, cap: int, stop: bool = True) -> tuple[int, dict]:
        g = self.generator
        body = {"model": g.model, "max_tokens": cap, "n": 1, **_params_body(self.params)}
        body["seed"] = _mix(state.seeds[r], len(state.texts[r]))
        if stop:
            body["stop"] = [self.delimiter]
            body["include_stop_str_in_output"] = True
        text = state.texts[r]
        if self.mode == "chat":
            msgs = [{"role": "user", "content": state.prompt}]
            if text:
                msgs.append({"role": "assistant", "content": text})
                body.update(continue_final_message=True, add_generation_prompt=False)
            out = g.client.post("/chat/completions", {**body, "messages": msgs})
            c = out["choices"][0]
            new = c["message"]["content"] or ""
        else:
            out = g.client.post("/completions", {**body, "prompt": state.prompt + text})
            c = out["choices"][0]
            new = c["text"]
        return r, {
            "text": new,
            "finish": c.get("finish_reason"),
            "stop_reason": c.get("stop_reason", ""),
            "usage": out.get("usage") or {},
        }

    def _batch(self) -> bool:
        return self.mode == "completions" and self.generator.server == "steerable"

    def _request_many(self, state: HTTPState, rows: list[int], cap: int, stop: bool) -> list[tuple[int, dict]]:
        """One completions request for every row (our server: each prompt samples from its own stream)."""
        g = self.generator
        body = {"model": g.model, "max_tokens": cap, "n": 1, "logprobs": 0, **_params_body(self.params)}
        body["seed"] = _mix(state.seeds[rows[0]], len(state.texts[rows[0]]), len(rows))
        if stop:
            body["stop"] = [self.delimiter]
            body["include_stop_str_in_output"] = True
        out = g.client.post("/completions", {**body, "prompt": [state.prompt + state.texts[r] for r in rows]})
        choices = sorted(out["choices"], key=lambda c: c["index"])
        g.add_usage(out.get("usage") or {})
        res = []
        for r, c in zip(rows, choices, strict=True):
            toks = len((c.get("logprobs") or {}).get("tokens") or [])
            res.append(
                (
                    r,
                    {
                        "text": c["text"],
                        "finish": c.get("finish_reason"),
                        "stop_reason": c.get("stop_reason", ""),
                        "tokens": toks,
                        "usage": None,
                    },
                )
            )
        return res

    def _results(self, state: HTTPState, live: list[int], cap: int, stop: bool) -> list[tuple[int, dict]]:
        if self._batch():
            return self._request_many(state, live, cap, stop)
        pool = self.generator.client.pool
        return [f.result() for f in [pool.submit(self._request, state, r, cap, stop) for r in live]]

    def propose(self, state: HTTPState, skip: Sequence[int] = ()) -> None:
        live = [r for r, t in enumerate(self.is_terminal(state)) if not t and r not in skip]
        if not live:
            return
        cap = self._share(self.step_tokens or self.max_step_tokens, live, state.capped)
        if cap == 0:
            return
        for r, res in self._results(state, live, cap, stop=not self.step_tokens):
            new = res["text"]
            if res["usage"] is not None:
                res["tokens"] = self.generator.add_usage(res["usage"]).generated_tokens
            state.texts[r] += new
            state.tokens[r] += res["tokens"]
            state.steps[r] += 1
            at_delim = bool(self.delimiter) and new.endswith(self.delimiter)
            # EOS: a "stop" that is not the delimiter (vLLM and our server say which in stop_reason)
            if res["finish"] == "stop" and not self.step_tokens:
                eos = res["stop_reason"] is None if res["stop_reason"] != "" else not at_delim
                if eos:
                    state.finished[r] = True
            if state.steps[r] >= self.max_steps or state.tokens[r] >= self.max_tokens:
                state.capped[r] = True

    def complete(self, state: HTTPState) -> HTTPState:
        """Every live row to its end in chunks of ``max_step_tokens``, ignoring the delimiter.

        What ``run_to_end`` uses for strategies that only need finished samples
        (self-consistency, best-of-N): a few requests per row instead of one per
        line (one per chunk for all rows on our server). A chunk is not a step:
        ``max_steps`` does not cap a row here, ``max_tokens`` does.
        """
        while True:
            live = [r for r, t in enumerate(self.is_terminal(state)) if not t]
            if not live:
                return state
            cap = min(self.max_step_tokens, max(1, min(self.max_tokens - state.tokens[r] for r in live)))
            cap = self._share(cap, live, state.capped)
            if cap == 0:
                return state
            for r, res in self._results(state, live, cap, stop=False):
                if res["usage"] is not None:
                    res["tokens"] = self.generator.add_usage(res["usage"]).generated_tokens
                state.texts[r] += res["text"]
                state.tokens[r] += res["tokens"]
                if res["finish"] == "stop":
                    state.finished[r] = True
                    state.steps[r] += 1
                elif state.tokens[r] >= self.max_tokens:
                    state.capped[r] = True

    def force(self, state: HTTPState, row: int, text: str, final: bool = False) -> None:
        state.texts[row] += text
        state.steps[row] += 1
        if final:
            state.capped[row] = True

    def select(self, state: HTTPState, rows: Sequence[int]) -> HTTPState:
        rows = list(rows)
        if not rows or min(rows) < 0 or max(rows) >= len(state.texts):
            raise InputError(f"row index out of range for a batch of {len(state.texts)}: {rows}")
        seeds, copies = [], {}
        for r in rows:  # a row's first copy continues its stream; further copies branch off it
            k = copies.get(r, 0)
            copies[r] = k + 1
            seeds.append(state.seeds[r] if k == 0 else _mix(state.seeds[r], k, len(state.texts[r])))
        pick = lambda xs: [xs[r] for r in rows]  # noqa: E731
        return HTTPState(
            state.prompt,
            pick(state.texts),
            seeds,
            pick(state.finished),
            pick(state.capped),
            pick(state.steps),
            pick(state.tokens),
        )

    def concat(self, states: Sequence[HTTPState]) -> HTTPState:
        return HTTPState(
            states[0].prompt,
            [x for s in states for x in s.texts],
            [x for s in states for x in s.seeds],
            [x for s in states for x in s.finished],
            [x for s in states for x in s.capped],
            [x for s in states for x in s.steps],
            [x for s in states for x in s.tokens],
        )

    def preview(self, state: HTTPState) -> list[str]:
        return list(state.texts)


class HTTPScorer:
    """A PRM behind ``POST /v1/score`` (``steerable serve --prm ...``)."""

    range = (0.0, 1.0)

    def __init__(self, client: HTTPClient, name: str | None = None):
        self.client, self.name = client, name
        self.calls = 0
        self.forward_tokens = 0

    def score(self, prompts: Sequence[str], partials: Sequence[str]) -> list[float]:
        self.calls += 1
        body = {"prompts": list(prompts), "partials": list(partials)}
        if self.name:
            body["scorer"] = self.name
        out = self.client.post("/score", body)
        self.forward_tokens += int((out.get("usage") or {}).get("scorer_tokens", 0))
        return [float(s) for s in out["scores"]]
