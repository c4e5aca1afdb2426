"""An OpenAI-compatible HTTP server over the engine (``steerable serve``; extra ``[serve]``).

Routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``
(``n``, ``temperature``, ``top_p``, ``top_k``, ``max_tokens``, ``stop``,
``seed``, ``logprobs``, ``stream`` with ``stream_options.include_usage``, and
vLLM's ``add_generation_prompt``, ``continue_final_message``,
``include_stop_str_in_output``, ``ignore_eos``), ``POST /v1/score`` (the PRM),
``GET /health``, ``GET /metrics`` (Prometheus text).

Two extra body fields:

- ``steering``: ``"NAME"`` or ``{"name": NAME, "strength": S}``, an artifact
  loaded with ``--steer NAME=PATH`` (a vector, a direction or a controller);
- ``scaling``: ``{"method": "pf", "budget": 8, "scorer": "prm", "delimiter":
  "\\n", "max_step_tokens": 64, "options": {...}}``, any method of
  ``steerable scale``; the response's text is the chosen sample, and a
  ``steerable`` field holds the answer, every candidate with its score and
  weight, and the cost.

Bad input is a 4xx with an OpenAI-style error body, never a 500.
A model without a chat template gets its messages' contents joined in order
(the built-in world's raw-prompt convention), so chat requests work on it too.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request  # module level: FastAPI reads route annotations from here

from steerable.errors import ConfigError, InputError, SteerableError
from steerable.lm.types import SamplingParams
from steerable.reward.scorer import CachedScorer
from steerable.serve.engine import Engine, GenRequest, Job, RequestResult, RowDelta


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


@dataclass
class ServeConfig:
    model_name: str = "builtin"
    api_key: str | None = None
    max_n: int = 64
    max_tokens: int = 4096  # the most a request may ask for
    default_max_tokens: int = 256  # chat requests without max_tokens (completions default to OpenAI's 16)
    max_body_bytes: int = 1 << 20
    max_budget: int = 64  # scaling budget limit
    scorers: dict[str, Any] = field(default_factory=dict)  # name -> scorer for scaling and /v1/score


def _error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def create_app(engine: Engine, config: ServeConfig):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    registry = CollectorRegistry()
    m_requests = Counter("steerable_requests", "Requests by route and status", ["route", "status"], registry=registry)
    m_tokens = Counter("steerable_tokens", "Tokens by kind", ["kind"], registry=registry)
    m_latency = Histogram(
        "steerable_request_seconds",
        "Request latency",
        ["route"],
        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        registry=registry,
    )
    m_queue = Gauge("steerable_queue_depth", "Requests waiting for the engine", registry=registry)
    m_rows = Gauge("steerable_running_rows", "Rows decoding now", registry=registry)

    def on_step(rows: int, depth: int) -> None:
        m_queue.set(depth)
        m_rows.set(rows)

    engine.on_step = on_step
    tok = engine.gen.tokenizer
    limit = getattr(engine.gen.model.config, "max_position_embeddings", None)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        # uvicorn has let in-flight requests finish by now; the worker drains what is left and ends
        await asyncio.get_running_loop().run_in_executor(None, engine.stop)

    app = FastAPI(title="steerable", lifespan=lifespan)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return JSONResponse(_error_body(e.status, e.message, e.param, e.code), status_code=e.status)

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        route = request.url.path
        t0 = time.perf_counter()
        if route.startswith("/v1"):
            if config.api_key is not None and request.headers.get("authorization") != f"Bearer {config.api_key}":
                m_requests.labels(route, "401").inc()
                return JSONResponse(
                    _error_body(401, "missing or wrong API key: send 'Authorization: Bearer KEY'"), status_code=401
                )
            size = request.headers.get("content-length")
            if size is not None and size.isdigit() and int(size) > config.max_body_bytes:
                m_requests.labels(route, "413").inc()
                return JSONResponse(
                    _error_body(413, f"request body of {size} bytes is over the limit of {config.max_body_bytes}"),
                    status_code=413,
                )
        try:
            response = await call_next(request)
        except Exception as e:  # a bug: say so as JSON, keep serving
            response = JSONResponse(_error_body(500, f"internal error: {type(e).__name__}: {e}"), status_code=500)
        m_requests.labels(route, str(response.status_code)).inc()
        m_latency.labels(route).observe(time.perf_counter() - t0)
        return response

    async def read_json(request: Request) -> dict:
        body = await request.body()
        if len(body) > config.max_body_bytes:
            raise APIError(413, f"request body of {len(body)} bytes is over the limit of {config.max_body_bytes}")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"the body is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
        if not isinstance(data, dict):
            raise APIError(400, "the body must be a JSON object")
        return data

    @app.get("/health")
    async def health():
        return {"status": "ok", "queue_depth": engine.queue_depth, "running_rows": engine.running_rows}

    @app.get("/metrics")
    async def metrics():
        m_queue.set(engine.queue_depth)
        m_rows.set(engine.running_rows)
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [
                {
                    "id": config.model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "steerable",
                    "max_model_len": limit,
                    "steering": sorted(engine.steering),
                    "scorers": sorted(config.scorers),
                }
            ],
        }

    # ---- parsing ---------------------------------------------------------------------------------

    def check_model(data: dict) -> None:
        name = data.get("model")
        if name is not None and name != config.model_name:
            raise APIError(
                404, f"model {name!r} is not served here: use {config.model_name!r}", "model", "model_not_found"
            )

    def number(data: dict, key: str, default, kind=float, lo=None, hi=None):
        v = data.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()):
            raise APIError(400, f"{key} must be {'an integer' if kind is int else 'a number'} (got {v!r})", key)
        v = kind(v)
        if lo is not None and v < lo or hi is not None and v > hi:
            raise APIError(400, f"{key} must be in [{lo}, {hi}] (got {v})", key)
        return v

    def sampling(data: dict, n_prompts: int, default_max: int) -> SamplingParams:
        n = number(data, "n", 1, int, 1, config.max_n)
        max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
        max_tokens = number({"max_tokens": max_tokens}, "max_tokens", default_max, int, 1, config.max_tokens)
        stop = data.get("stop") or ()
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
            raise APIError(400, "stop must be a non-empty string or a list of them", "stop")
        top_k = number(data, "top_k", 0, int, -1, None)
        seed = data.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise APIError(400, f"seed must be an integer (got {seed!r})", "seed")
        if n * n_prompts > config.max_n:
            raise APIError(400, f"{n} samples of {n_prompts} prompts is over the limit of {config.max_n}", "n")
        try:
            return SamplingParams(
                temperature=number(data, "temperature", 1.0, float, 0.0, 2.0),
                top_p=number(data, "top_p", 1.0, float, 0.0, 1.0),
                top_k=max(0, top_k),
                max_new_tokens=max_tokens,
                n=n,
                stop=tuple(stop),
                seed=seed,
                ignore_eos=bool(data.get("ignore_eos", False)),
            )
        except ConfigError as e:
            raise APIError(400, str(e)) from None

    def steering_of(data: dict) -> tuple[str | None, float | None]:
        s = data.get("steering")
        if s is None:
            return None, None
        if isinstance(s, str):
            name, strength = s, None
        elif isinstance(s, dict) and isinstance(s.get("name"), str):
            name = s["name"]
            strength = number(s, "strength", None, float)
        else:
            raise APIError(400, 'steering must be a name or {"name": NAME, "strength": S}', "steering")
        if name not in engine.steering:
            have = ", ".join(sorted(engine.steering)) or "none (start the server with --steer NAME=PATH)"
            raise APIError(400, f"unknown steering artifact {name!r}: loaded are {have}", "steering")
        return name, strength

    def check_context(ids: list[int]) -> None:
        if limit and len(ids) >= limit:
            raise APIError(
                400, f"the prompt has {len(ids)} tokens, over the model's context of {limit}: shorten it", "prompt"
            )

    def completion_prompts(data: dict) -> list[list[int]]:
        p = data.get("prompt")
        if isinstance(p, str):
            p = [p]
        if not isinstance(p, list) or not p:
            raise APIError(400, "prompt must be a string, a list of strings, or token ids", "prompt")
        if all(isinstance(x, int) and not isinstance(x, bool) for x in p):
            p = [p]
        out = []
        for x in p:
            if isinstance(x, str):
                out.append(tok(x)["input_ids"])
            elif isinstance(x, list) and x and all(isinstance(t, int) and 0 <= t < len(tok) for t in x):
                out.append(list(x))
            else:
                raise APIError(400, "prompt must be a string, a list of strings, or token ids in the vocabulary")
        return out

    def chat_prompt(data: dict) -> list[int]:
        msgs = data.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise APIError(400, "messages must be a non-empty list of {role, content}", "messages")
        clean = []
        for m in msgs:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise APIError(400, "every message needs a role and a content", "messages")
            c = m.get("content")
            if isinstance(c, list):  # content parts: keep the text ones
                c = "".join(part.get("text", "") for part in c if isinstance(part, dict) and part.get("type") == "text")
            if not isinstance(c, str):
                raise APIError(400, "message content must be a string or a list of text parts", "messages")
            clean.append({"role": m["role"], "content": c})
        cont = bool(data.get("continue_final_message", False))
        add = bool(data.get("add_generation_prompt", not cont))
        if cont and add:
            raise APIError(400, "continue_final_message and add_generation_prompt cannot both be true")
        if cont and clean[-1]["role"] != "assistant":
            raise APIError(400, "continue_final_message needs the last message to be the assistant's")
        if getattr(tok, "chat_template", None) is None:
            return tok("".join(m["content"] for m in clean))["input_ids"]
        try:
            text = tok.apply_chat_template(
                clean, add_generation_prompt=add, continue_final_message=cont, tokenize=False
            )
        except Exception as e:  # a template that rejects these messages (roles out of order, ...)
            raise APIError(400, f"the chat template rejected the messages: {e}", "messages") from None
        return tok(text, add_special_tokens=False)["input_ids"]

    # ---- running ---------------------------------------------------------------------------------

    def submit(req: GenRequest | Job) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def emit(kind: str, payload) -> None:
            loop.call_soon_threadsafe(q.put_nowait, (kind, payload))

        req.emit = emit
        try:
            engine.submit(req)
        except ConfigError as e:
            raise APIError(503, str(e)) from None
        return q

    async def wait(q: asyncio.Queue):
        while True:
            kind, payload = await q.get()
            if kind == "done":
                return payload
            if kind == "error":
                raise _as_api_error(payload)

    def usage_of(res: RequestResult) -> dict:
        m_tokens.labels("prompt").inc(res.prompt_tokens)
        m_tokens.labels("completion").inc(res.completion_tokens)
        return {
            "prompt_tokens": res.prompt_tokens,
            "completion_tokens": res.completion_tokens,
            "total_tokens": res.prompt_tokens + res.completion_tokens,
        }

    def logprobs_completion(ids, lps) -> dict:
        toks = [tok.decode([t]) for t in ids]
        return {"tokens": toks, "token_logprobs": lps, "top_logprobs": [{}] * len(toks), "text_offset": []}

    def logprobs_chat(ids, lps) -> dict:
        return {
            "content": [
                {"token": tok.decode([t]), "logprob": lp, "bytes": list(tok.decode([t]).encode()), "top_logprobs": []}
                for t, lp in zip(ids, lps, strict=True)
            ]
        }

    async def run_scaling(data: dict, ids: list[int], params: SamplingParams, chat: bool, steering) -> dict:
        spec = data["scaling"]
        if not isinstance(spec, dict) or not isinstance(spec.get("method"), str):
            raise APIError(400, 'scaling must be {"method": NAME, "budget": N, ...}', "scaling")
        if params.n != 1 or data.get("stream"):
            raise APIError(400, "a scaling request returns one chosen sample: use n = 1 and no streaming", "scaling")
        from steerable.search.process import LMProcess
        from steerable.search.registry import UNSCORED, make_strategy
        from steerable.tasks.answers import make_checker

        budget = number(spec, "budget", 4, int, 1, config.max_budget)
        method = spec["method"]
        try:
            checker = make_checker(spec.get("answer_format", "builtin"), spec.get("answer_regex"))
            strategy = make_strategy(method, checker.extract, spec.get("options") or {})
        except SteerableError as e:
            raise APIError(400, str(e), "scaling") from None
        scorer = None
        if method not in UNSCORED:
            name = spec.get("scorer", next(iter(config.scorers), None))
            if name not in config.scorers:
                have = ", ".join(sorted(config.scorers)) or "none (start the server with --prm builtin)"
                raise APIError(400, f"{method} needs a scorer; {name!r} is not loaded: use one of {have}", "scaling")
            scorer = config.scorers[name]
        delim = spec.get("delimiter", "\n" if config.model_name == "builtin" else "\n\n")
        if not isinstance(delim, str) or not delim:
            raise APIError(400, "scaling.delimiter must be a non-empty string", "scaling")
        max_step = number(spec, "max_step_tokens", 64, int, 1, config.max_tokens)
        prompt_text = tok.decode(ids, skip_special_tokens=True)
        seed = params.seed if params.seed is not None else 0

        def job():
            from contextlib import nullcontext

            from steerable.steer.artifact import steering_context

            process = LMProcess(
                engine.gen,
                delimiter=delim,
                params=SamplingParams(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k),
                max_step_tokens=max_step,
                max_steps=64,
                max_tokens=params.max_new_tokens,
            )
            if isinstance(scorer, CachedScorer):
                scorer.clear_cache()
            name, strength = steering
            ctx = (
                nullcontext()
                if name is None
                else steering_context(engine.steering[name], engine.gen.model, strength=strength)
            )
            t0 = time.perf_counter()
            with ctx:
                res = strategy.run(process, scorer, budget, prompt_text, seed=seed)
            return res, time.perf_counter() - t0

        res, seconds = await wait(submit(Job(job, None)))  # type: ignore[arg-type]
        usage = {
            "prompt_tokens": len(ids),
            "completion_tokens": res.cost.generated_tokens,
            "total_tokens": len(ids) + res.cost.generated_tokens,
        }
        m_tokens.labels("prompt").inc(len(ids))
        m_tokens.labels("completion").inc(res.cost.generated_tokens)
        choice: dict = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": res.text}
        else:
            choice["text"] = res.text
        return {
            "choices": [choice],
            "usage": usage,
            "steerable": {
                "method": res.method,
                "budget": res.budget,
                "answer": res.answer,
                "candidates": [
                    {"text": c.text, "answer": c.answer, "score": _finite(c.score), "weight": c.weight}
                    for c in res.candidates
                ],
                "cost": {
                    "generated_tokens": res.cost.generated_tokens,
                    "forward_tokens": res.cost.forward_tokens,
                    "scorer_calls": res.cost.scorer_calls,
                    "scorer_tokens": res.cost.scorer_tokens,
                    "seconds": round(seconds, 4),
                },
                "info": res.info,
            },
        }

    async def handle(request: Request, chat: bool):
        data = await read_json(request)
        check_model(data)
        if chat:
            prompts = [chat_prompt(data)]
            default_max = config.default_max_tokens
        else:
            prompts = completion_prompts(data)
            default_max = 16
        params = sampling(data, len(prompts), default_max)
        for ids in prompts:
            check_context(ids)
        steering = steering_of(data)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        head = {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": config.model_name,
        }
        if data.get("scaling") is not None:
            if len(prompts) != 1:
                raise APIError(400, "a scaling request takes one prompt", "prompt")
            return {**head, **await run_scaling(data, prompts[0], params, chat, steering)}
        lp = data.get("logprobs")
        want_lp = bool(lp) if chat else lp is not None and lp is not False
        top = data.get("top_logprobs") if chat else (lp if isinstance(lp, int) and not isinstance(lp, bool) else 0)
        if top:
            raise APIError(400, "top_logprobs are not supported: ask for the sampled tokens' logprobs only", "logprobs")
        req = GenRequest(
            prompts,
            params,
            emit=None,  # type: ignore[arg-type]
            steering=steering[0],
            strength=steering[1],
            include_stop=bool(data.get("include_stop_str_in_output", False)),
            want_logprobs=want_lp,
            stream=bool(data.get("stream")),
        )
        q = submit(req)
        if data.get("stream"):
            include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                stream(q, req, head, chat, want_lp, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        try:
            res = await wait(q)
        except asyncio.CancelledError:
            req.cancelled = True
            raise
        choices = []
        for i, row in enumerate(res.rows):
            c: dict = {"index": i, "finish_reason": row.finish_reason, "stop_reason": row.stop_reason}
            if chat:
                c["message"] = {"role": "assistant", "content": row.text}
                c["logprobs"] = logprobs_chat(row.token_ids, row.logprobs) if want_lp else None
            else:
                c["text"] = row.text
                c["logprobs"] = logprobs_completion(row.token_ids, row.logprobs) if want_lp else None
            choices.append(c)
        return {
            **head,
            "choices": choices,
            "usage": usage_of(res),
            "steerable": {"forward_tokens": res.forward_tokens, "seconds": round(res.seconds, 4)},
        }

    async def stream(q, req, head, chat, want_lp, include_usage) -> AsyncIterator[str]:
        obj = "chat.completion.chunk" if chat else "text_completion"
        started: set[int] = set()
        try:
            while True:
                kind, payload = await q.get()
                if kind == "error":
                    err = _as_api_error(payload)
                    yield f"data: {json.dumps(_error_body(err.status, err.message))}\n\n"
                    break
                if kind == "delta":
                    d: RowDelta = payload
                    if chat:
                        delta = {"content": d.text}
                        if d.row not in started:
                            delta["role"] = "assistant"
                            started.add(d.row)
                        c = {"index": d.row, "delta": delta, "finish_reason": None}
                        c["logprobs"] = logprobs_chat(d.token_ids, d.logprobs) if want_lp else None
                    else:
                        c = {"index": d.row, "text": d.text, "finish_reason": None}
                        c["logprobs"] = logprobs_completion(d.token_ids, d.logprobs) if want_lp else None
                    yield f"data: {json.dumps({**head, 'object': obj, 'choices': [c]})}\n\n"
                    continue
                res: RequestResult = payload
                for i, row in enumerate(res.rows):
                    c = {"index": i, "finish_reason": row.finish_reason, "stop_reason": row.stop_reason}
                    c.update({"delta": {}} if chat else {"text": ""})
                    yield f"data: {json.dumps({**head, 'object': obj, 'choices': [c]})}\n\n"
                usage = usage_of(res)
                if include_usage:
                    yield f"data: {json.dumps({**head, 'object': obj, 'choices': [], 'usage': usage})}\n\n"
                break
            yield "data: [DONE]\n\n"
        finally:
            req.cancelled = True  # the client left (or we are done): free its rows

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, chat=True)

    @app.post("/v1/score")
    async def score(request: Request):
        """PRM scores: ``{"prompt": P, "partials": [...]}`` (or ``prompts``, one each) -> ``{"scores": [...]}``."""
        data = await read_json(request)
        name = data.get("scorer", next(iter(config.scorers), None))
        if name not in config.scorers:
            have = ", ".join(sorted(config.scorers)) or "none (start the server with --prm builtin)"
            raise APIError(400, f"scorer {name!r} is not loaded: use one of {have}", "scorer")
        partials = data.get("partials")
        if not isinstance(partials, list) or not all(isinstance(p, str) for p in partials) or not partials:
            raise APIError(400, "partials must be a non-empty list of strings", "partials")
        prompts = data.get("prompts")
        if prompts is None:
            if not isinstance(data.get("prompt"), str):
                raise APIError(400, "give prompt (a string) or prompts (one per partial)", "prompt")
            prompts = [data["prompt"]] * len(partials)
        if (
            not isinstance(prompts, list)
            or len(prompts) != len(partials)
            or not all(isinstance(p, str) for p in prompts)
        ):
            raise APIError(400, "prompts must be a list of strings, one per partial", "prompts")
        if len(partials) > 16 * config.max_n:
            raise APIError(400, f"{len(partials)} partials is over the limit of {16 * config.max_n}", "partials")
        from steerable.reward.scorer import checked_scores

        scorer = config.scorers[name]

        def job():
            before = scorer.forward_tokens
            return checked_scores(scorer, prompts, partials), scorer.forward_tokens - before

        scores, used = await wait(submit(Job(job, None)))  # type: ignore[arg-type]
        return {"object": "scores", "scorer": name, "scores": scores, "usage": {"scorer_tokens": used}}

    return app


def _finite(x: float) -> float | None:
    import math

    return None if math.isnan(x) else x


def _as_api_error(e: BaseException) -> APIError:
    if isinstance(e, APIError):
        return e
    if isinstance(e, (InputError, ConfigError)):
        return APIError(400, str(e))
    if isinstance(e, SteerableError):
        return APIError(422, str(e))
    return APIError(500, f"internal error: {type(e).__name__}: {e}")
