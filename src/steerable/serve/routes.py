"""The server's routes: a validated body in, the engine's work out in OpenAI's shapes.

Bodies arrive already checked against :mod:`steerable.serve.schemas`; here
come the checks that depend on the server (``--max-n``, ``--max-tokens``,
``--max-request-tokens``, the context, the vocabulary, what is loaded), then
the request goes to the engine. A request waits for its result while
watching its connection: a client that leaves cancels its rows or its
scaling run, streaming or not.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, runtime_checkable

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from steerable.errors import ConfigError, InputError, SteerableError
from steerable.reward.scorer import Scorer
from steerable.search.watch import Watch
from steerable.serve.engine import Engine, GenRequest, Job, RequestResult, RowDelta
from steerable.serve.gate import Metrics
from steerable.serve.openai import (
    APIError,
    Formatter,
    agent_scaling_body,
    dumps,
    error_body,
    json_safe,
    scaling_body,
    usage,
)
from steerable.serve.prepare import Prepared, Preparer
from steerable.serve.scaling import Cancelled, OverBudget, make_agent_run, make_run, show_text
from steerable.serve.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    Sampling,
    ScoreRequest,
)
from steerable.serve.tools import ToolCalling, ToolTurn, tool_message, wants_tools

#: the status a request gets when its client left before the answer (nginx's "client closed request")
CLIENT_GONE = 499


class ClientGone(Exception):
    pass


class Routes:
    """The handlers, bound to one engine and one server configuration."""

    def __init__(self, engine: Engine, config, metrics: Metrics):
        self.engine, self.config, self.metrics = engine, config, metrics
        self.tok = engine.gen.tokenizer
        self.fmt = Formatter(self.tok)
        self.context: int | None = getattr(engine.gen.model.config, "max_position_embeddings", None)
        self.prep = Preparer(self.tok, config, engine.steering, self.context)
        self.tools = ToolCalling(self.tok, config.tool_format)

    # ---- small routes ----------------------------------------------------------------------------

    async def health(self) -> dict:
        return {"status": "ok", "queue_depth": self.engine.queue_depth, "running_rows": self.engine.running_rows}

    async def metrics_text(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        self.metrics.queue.set(self.engine.queue_depth)
        self.metrics.rows.set(self.engine.running_rows)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def models(self) -> dict:
        """The model, then each steering artifact as a model of its own (as vLLM lists LoRA adapters)."""
        base = self.config.model_name
        entry = {"object": "model", "created": 0, "owned_by": "steerable", "max_model_len": self.context}
        steered = [{"id": name, **entry, "parent": base, "root": base} for name in sorted(self.engine.steering)]
        first = {
            "id": base,
            **entry,
            "steering": sorted(self.engine.steering),
            "scorers": sorted(self.config.scorers),
        }
        return {"object": "list", "data": [first, *steered]}

    # ---- generation ------------------------------------------------------------------------------

    async def completions(self, body: CompletionRequest, request: Request):
        body = self.prep.model_steering(body)
        if body.echo and body.stream:
            raise APIError(400, "echo is not supported with stream: ask without stream", "echo")
        if body.max_tokens == 0 and not body.echo:
            raise APIError(400, "max_tokens 0 generates nothing: use it with echo to score the prompt", "max_tokens")
        texts, prompts = self.prep.completion_prompts(body.prompt)
        prep = self.prep.prepare(body, prompts, texts, default_max=16)
        k = body.logprobs
        want_lp = k is not None
        return await self._generate(
            body, prep, request, chat=False, want_lp=want_lp, top=k or 0, echo=body.echo, route="/v1/completions"
        )

    async def chat(self, body: ChatCompletionRequest, request: Request):
        body = self.prep.model_steering(body)
        turn = self.tools.prepare(body) if wants_tools(body) else None
        ids = turn.ids if turn is not None else self.prep.chat_prompt(body)
        if not ids:
            raise APIError(400, "the messages encode to no tokens: send some content", "messages")
        if body.max_completion_tokens is not None:
            body = body.model_copy(update={"max_tokens": body.max_completion_tokens})
        prep = self.prep.prepare(body, [ids], [""], default_max=self.config.default_max_tokens)
        return await self._generate(
            body,
            prep,
            request,
            chat=True,
            want_lp=body.logprobs,
            top=body.top_logprobs or 0,
            echo=False,
            route="/v1/chat/completions",
            turn=turn,
        )

    async def _generate(
        self,
        body: Sampling,
        prep: Prepared,
        request: Request,
        *,
        chat: bool,
        want_lp: bool,
        top: int,
        echo: bool,
        route: str,
        turn: ToolTurn | None = None,
    ):
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        head = {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.config.model_name,
        }
        if body.scaling is not None:
            out = await self._scaling(body, prep, request, chat, want_lp, echo, head)
            return out if isinstance(out, StreamingResponse) else {**head, **out}
        measure = want_lp and echo
        self.prep.check_cap(prep, sum(len(p) for p in prep.prompts) if measure else 0)
        req = GenRequest(
            prep.prompts,
            prep.params,
            emit=None,  # type: ignore[arg-type]
            steering=prep.steering[0],
            strength=prep.steering[1],
            include_stop=body.include_stop_str_in_output,
            want_logprobs=want_lp,
            top=top,
            prompt_logprobs=top if measure else None,
            score_only=prep.score_only,
            stream=body.stream,
            stop_line=turn.stop_line if turn is not None else None,
        )
        q = self._submit(req)
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(
                self._stream(q, req, head, chat, want_lp, top, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        try:
            res: RequestResult = await self._wait(q, request)
        except ClientGone:
            req.cancelled = True
            self.metrics.cancelled.labels(route).inc()
            return Response(status_code=CLIENT_GONE)
        n = prep.params.n
        if chat:
            choices = [self.fmt.chat_choice(i, row, want_lp) for i, row in enumerate(res.rows)]
            if turn is not None:
                for c, row in zip(choices, res.rows, strict=True):
                    content, calls = turn.read(row.text)
                    if calls:
                        c.update(message=tool_message(content, calls), finish_reason="tool_calls", stop_reason=None)
        else:
            choices = [
                self.fmt.completion_choice(i, row, want_lp, top, prep.texts[i // n] if echo else None)
                for i, row in enumerate(res.rows)
            ]
        self._count(res.prompt_tokens, res.completion_tokens)
        extra = {"forward_tokens": res.forward_tokens, "seconds": round(res.seconds, 4)}
        if req.controller is not None:
            extra["controller"] = json_safe(req.controller)
        return {**head, "choices": choices, "usage": usage(res), "steerable": extra}

    def _count(self, prompt: int, completion: int) -> None:
        self.metrics.tokens.labels("prompt").inc(prompt)
        self.metrics.tokens.labels("completion").inc(completion)

    # ---- the engine ------------------------------------------------------------------------------

    def _submit(self, item: GenRequest | Job) -> asyncio.Queue:
        return submit(self.engine, item)

    async def _wait(self, q: asyncio.Queue, request: Request):
        return await wait(q, request)

    async def _stream(self, q, req: GenRequest, head, chat, want_lp, top, include_usage) -> AsyncIterator[str]:
        obj = "chat.completion.chunk" if chat else "text_completion"
        started: set[int] = set()
        try:
            while True:
                kind, payload = await q.get()
                if kind == "error":
                    err = as_api_error(payload)
                    yield f"data: {dumps(error_body(err.status, err.message, err.param, err.code))}\n\n"
                    break
                if kind == "delta":
                    d: RowDelta = payload
                    c = self.fmt.delta_choice(d, chat, want_lp, top, d.row not in started)
                    started.add(d.row)
                    yield f"data: {dumps({**head, 'object': obj, 'choices': [c]})}\n\n"
                    continue
                res: RequestResult = payload
                for i, row in enumerate(res.rows):
                    c = {"index": i, "finish_reason": row.finish_reason, "stop_reason": row.stop_reason}
                    c.update({"delta": {}} if chat else {"text": ""})
                    yield f"data: {dumps({**head, 'object': obj, 'choices': [c]})}\n\n"
                self._count(res.prompt_tokens, res.completion_tokens)
                if include_usage:
                    yield f"data: {dumps({**head, 'object': obj, 'choices': [], 'usage': usage(res)})}\n\n"
                break
            yield "data: [DONE]\n\n"
        finally:
            req.cancelled = True  # the client left (or we are done): free its rows

    # ---- scaling ---------------------------------------------------------------------------------

    async def _scaling(
        self, body: Sampling, prep: Prepared, request: Request, chat: bool, want_lp: bool, echo: bool, head: dict
    ):
        if prep.params.n != 1:
            raise APIError(400, "a scaling request returns one chosen sample: use n = 1", "n")
        if len(prep.prompts) != 1:
            raise APIError(400, "a scaling request takes one prompt", "prompt")
        if want_lp or echo or prep.score_only:
            raise APIError(400, "a scaling request returns no logprobs and no echo: leave them out", "scaling")
        assert body.scaling is not None
        ids = prep.prompts[0]
        if body.scaling.task is not None:
            if body.stream:
                raise APIError(400, "an agent scaling run (scaling.task) is not streamed: leave stream out", "stream")
            return await self._agent_scaling(body, prep, request, chat)
        run = make_run(
            body.scaling,
            self.tok.decode(ids, skip_special_tokens=True),
            prep.params,
            self.config,
            self._steering_factory(prep.steering),
        )
        job = Job(lambda: run(self.engine.gen), None)  # type: ignore[arg-type]
        if body.stream:
            run.watch = Watch(lambda event: self._watched(job, run, event), show=show_text)
            q = self._submit(job)

            def finish(payload) -> dict:
                res, seconds = payload
                self._count(len(ids), res.cost.generated_tokens)
                return {**head, **scaling_body(res, seconds, len(ids), chat, run.controller, run.gold)}

            def left() -> None:
                job.cancelled = run.guard.cancelled = True
                self.metrics.cancelled.labels("/v1/chat/completions" if chat else "/v1/completions").inc()

            return stream_run(q, finish, left)
        q = self._submit(job)
        try:
            res, seconds = await self._wait(q, request)
        except ClientGone:
            job.cancelled = run.guard.cancelled = True
            self.metrics.cancelled.labels("/v1/chat/completions" if chat else "/v1/completions").inc()
            raise
        self._count(len(ids), res.cost.generated_tokens)
        return scaling_body(res, seconds, len(ids), chat, run.controller, run.gold)

    @staticmethod
    def _watched(job: Job, run, event: dict) -> None:
        """A watched run's event, from the engine thread to the stream (a client that left stops the run here)."""
        if run.guard.cancelled:
            raise Cancelled("the client closed the connection")
        job.emit("event", event)

    async def _agent_scaling(self, body: Sampling, prep: Prepared, request: Request, chat: bool):
        """A ``scaling.task`` run: an agent method in the server's own copy of the task's environment."""
        if not chat:
            raise APIError(400, "scaling.task is for /v1/chat/completions", "scaling.task")
        run = make_agent_run(body.scaling, prep.params, self.config, self.engine.gen)
        job = Job(lambda: run(self.engine.gen), None)  # type: ignore[arg-type]
        q = self._submit(job)
        try:
            res, seconds = await self._wait(q, request)
        except ClientGone:
            job.cancelled = run.guard.cancelled = True
            self.metrics.cancelled.labels("/v1/chat/completions").inc()
            raise
        self._count(0, res.cost.generated_tokens)
        return agent_scaling_body(res, seconds, run.task)

    def _steering_factory(self, steering: tuple[str | None, float | None]) -> Callable[[], Any] | None:
        name, strength = steering
        if name is None:
            return None
        from steerable.steer.artifact import steering_context

        art, model = self.engine.steering[name], self.engine.gen.model
        return lambda: steering_context(art, model, strength=strength)

    # ---- scoring ---------------------------------------------------------------------------------

    async def score(self, body: ScoreRequest, request: Request):
        """PRM scores: ``{"prompt": P, "partials": [...]}`` (or ``prompts``, one each) -> ``{"scores": [...]}``."""
        from steerable.reward.scorer import checked_scores

        self.prep.check_model(body.model)
        name = body.scorer or next(iter(self.config.scorers), None)
        if name not in self.config.scorers:
            have = ", ".join(sorted(self.config.scorers)) or "none (start the server with --prm builtin)"
            raise APIError(400, f"scorer {name!r} is not loaded: use one of {have}", "scorer")
        limit = 16 * self.config.max_n
        if len(body.partials) > limit:
            raise APIError(400, f"{len(body.partials)} partials is over the limit of {limit}", "partials")
        prompts, partials = body.pairs()
        scorer = self.config.scorers[name]
        self._check_scored(scorer, prompts, partials)

        def job():
            before = scorer.forward_tokens
            return checked_scores(scorer, prompts, partials), scorer.forward_tokens - before

        item = Job(job, None)  # type: ignore[arg-type]
        q = self._submit(item)
        try:
            scores, used = await self._wait(q, request)
        except ClientGone:
            item.cancelled = True
            self.metrics.cancelled.labels("/v1/score").inc()
            return Response(status_code=CLIENT_GONE)
        return {"object": "scores", "scorer": name, "scores": scores, "usage": {"scorer_tokens": used}}

    def _check_scored(self, scorer, prompts: list[str], partials: list[str]) -> None:
        """Every (prompt, partial) within the scorer's context; all of them within the per-request cap."""
        if not isinstance(scorer, ModelScorer):  # a rule (the oracle) reads text, bounded by the body limit
            return
        context = getattr(scorer.model.config, "max_position_embeddings", None)
        texts = [p + s for p, s in zip(prompts, partials, strict=True)]
        lengths = [len(ids) for ids in scorer.tokenizer(texts)["input_ids"]]
        for i, n in enumerate(lengths):
            if context and n > context:
                raise APIError(
                    400,
                    f"partials[{i}] with its prompt is {n} tokens, over the scorer's context of {context}: shorten it",
                    f"partials[{i}]",
                )
        cap = self.config.max_request_tokens
        if sum(lengths) > cap:
            raise APIError(
                400,
                f"these partials are {sum(lengths)} tokens to score, over the server's --max-request-tokens of {cap}: "
                "send fewer or shorter ones",
                "partials",
                "request_too_large",
            )


@runtime_checkable
class ModelScorer(Scorer, Protocol):
    """A scorer that runs a transformers model on ``prompt + partial`` (the PRMs and ORMs; not the oracle)."""

    model: Any
    tokenizer: Any


def submit(engine: Engine, item: GenRequest | Job) -> asyncio.Queue:
    """Queue ``item`` on the engine; its events (``delta``, ``done``, ``error``) arrive on the returned queue."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()

    def emit(kind: str, payload) -> None:
        loop.call_soon_threadsafe(q.put_nowait, (kind, payload))

    item.emit = emit
    try:
        engine.submit(item)
    except ConfigError as e:
        raise APIError(503, str(e)) from None
    return q


async def _result(q: asyncio.Queue):
    while True:
        kind, payload = await q.get()
        if kind == "done":
            return payload
        if kind == "error":
            raise as_api_error(payload)


async def wait(q: asyncio.Queue, request: Request):
    """The request's result; :class:`ClientGone` as soon as its client disconnects."""
    result = asyncio.ensure_future(_result(q))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (result, gone):
            if not task.done():
                task.cancel()
    if result.done():
        return result.result()
    raise ClientGone


class WorldRoutes:
    """What the servers of a built-in world (images, control) share: their bindings, health and metrics."""

    def __init__(self, engine: Engine, world, config, metrics: Metrics):
        self.engine, self.world, self.config, self.metrics = engine, world, config, metrics

    async def health(self) -> dict:
        return {"status": "ok", "queue_depth": self.engine.queue_depth}

    async def metrics_text(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        self.metrics.queue.set(self.engine.queue_depth)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def stream_run(q: asyncio.Queue, finish: Callable[[Any], dict], left: Callable[[], None]) -> StreamingResponse:
    """A job's run as server-sent events: each ``event`` the run emits as ``{"object": "steerable.event", ...}``,
    then ``finish(result)`` (the response a request without ``stream`` gets) or the API's error body, then
    ``[DONE]``; ``left()`` when the client went before the end (the run must stop at its next step or event)."""

    async def events() -> AsyncIterator[str]:
        ended = False
        try:
            while True:
                kind, payload = await q.get()
                if kind == "event":
                    yield f"data: {dumps({'object': 'steerable.event', 'event': json_safe(payload)})}\n\n"
                    continue
                if kind == "error":
                    err = as_api_error(payload)
                    yield f"data: {dumps(error_body(err.status, err.message, err.param, err.code))}\n\n"
                else:
                    yield f"data: {dumps(finish(payload))}\n\n"
                break
            yield "data: [DONE]\n\n"
            ended = True
        finally:
            if not ended:
                left()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: what comes next is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def as_api_error(e: BaseException) -> APIError:
    if isinstance(e, APIError):
        return e
    if isinstance(e, OverBudget):
        return APIError(400, str(e), "max_tokens", "request_too_large")
    if isinstance(e, Cancelled):
        return APIError(CLIENT_GONE, str(e))
    if isinstance(e, (InputError, ConfigError)):
        return APIError(400, str(e))
    if isinstance(e, SteerableError):
        return APIError(422, str(e))
    return APIError(500, f"internal error: {type(e).__name__}: {e}")
