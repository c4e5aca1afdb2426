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
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from steerable.errors import ConfigError, InputError, SteerableError
from steerable.lm.types import SamplingParams
from steerable.reward.scorer import Scorer
from steerable.serve.engine import Engine, GenRequest, Job, RequestResult, RowDelta
from steerable.serve.gate import Metrics
from steerable.serve.openai import APIError, Formatter, dumps, error_body, usage
from steerable.serve.scaling import Cancelled, Guard, OverBudget, ScalingRun
from steerable.serve.schemas import (
    GREEDY_BELOW,
    ChatCompletionRequest,
    CompletionRequest,
    Sampling,
    ScoreRequest,
)

#: the status a request gets when its client left before the answer (nginx's "client closed request")
CLIENT_GONE = 499


class ClientGone(Exception):
    pass


@dataclass
class Prepared:
    """A generation request after the server's checks: token ids, sampling, steering and what to send back."""

    prompts: list[list[int]]
    texts: list[str]  # each prompt as text (echo)
    params: SamplingParams
    steering: tuple[str | None, float | None]
    score_only: bool  # max_tokens 0 (echo)


class Routes:
    """The handlers, bound to one engine and one server configuration."""

    def __init__(self, engine: Engine, config, metrics: Metrics):
        self.engine, self.config, self.metrics = engine, config, metrics
        self.tok = engine.gen.tokenizer
        self.fmt = Formatter(self.tok)
        self.context: int | None = getattr(engine.gen.model.config, "max_position_embeddings", None)
        self.vocab = len(self.tok)

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
        body = self._model_steering(body)
        if body.echo and body.stream:
            raise APIError(400, "echo is not supported with stream: ask without stream", "echo")
        if body.max_tokens == 0 and not body.echo:
            raise APIError(400, "max_tokens 0 generates nothing: use it with echo to score the prompt", "max_tokens")
        texts, prompts = self._completion_prompts(body.prompt)
        prep = self._prepare(body, prompts, texts, default_max=16)
        k = body.logprobs
        want_lp = k is not None
        return await self._generate(
            body, prep, request, chat=False, want_lp=want_lp, top=k or 0, echo=body.echo, route="/v1/completions"
        )

    async def chat(self, body: ChatCompletionRequest, request: Request):
        body = self._model_steering(body)
        ids = self._chat_prompt(body)
        if body.max_completion_tokens is not None:
            body = body.model_copy(update={"max_tokens": body.max_completion_tokens})
        prep = self._prepare(body, [ids], [""], default_max=self.config.default_max_tokens)
        return await self._generate(
            body,
            prep,
            request,
            chat=True,
            want_lp=body.logprobs,
            top=body.top_logprobs or 0,
            echo=False,
            route="/v1/chat/completions",
        )

    def _check_model(self, name: str | None) -> None:
        if name is not None and name != self.config.model_name and name not in self.engine.steering:
            served = ", ".join([self.config.model_name, *sorted(self.engine.steering)])
            raise APIError(404, f"model {name!r} is not served here: use one of {served}", "model", "model_not_found")

    def _model_steering(self, body):
        """A request for a model named like a steering artifact is steered by it (at the artifact's strength).

        So a client that can only choose a model name (lm-eval, most OpenAI
        clients) can ask for steering, as vLLM serves LoRA adapters by name.
        """
        self._check_model(body.model)
        if body.model is None or body.model == self.config.model_name:
            return body
        if body.steering is not None:
            raise APIError(
                400, f"model {body.model!r} is a steering artifact and steering is given too: give one", "steering"
            )
        return body.model_copy(update={"steering": body.model})

    def _completion_prompts(self, prompt) -> tuple[list[str], list[list[int]]]:
        if isinstance(prompt, str) or prompt and isinstance(prompt[0], int):
            prompt = [prompt]
        texts, out = [], []
        for i, p in enumerate(prompt):
            if isinstance(p, str):
                ids = self.tok(p)["input_ids"]
                texts.append(p)
            else:
                bad = next((t for t in p if t >= self.vocab), None)
                if bad is not None:
                    raise APIError(
                        400, f"prompt[{i}]: token id {bad} is not in the vocabulary of {self.vocab}", "prompt"
                    )
                ids = list(p)
                texts.append(self.tok.decode(ids))
            if not ids:
                raise APIError(400, f"prompt[{i}] encodes to no tokens: send a non-empty prompt", "prompt")
            out.append(ids)
        return texts, out

    def _chat_prompt(self, body: ChatCompletionRequest) -> list[int]:
        msgs = []
        for m in body.messages:
            c = m.content
            if isinstance(c, list):
                c = "".join(part.text for part in c)
            msgs.append({"role": m.role, "content": c or ""})
        cont = body.continue_final_message
        add = body.add_generation_prompt if body.add_generation_prompt is not None else not cont
        if cont and add:
            raise APIError(400, "continue_final_message and add_generation_prompt cannot both be true", "messages")
        if cont and msgs[-1]["role"] != "assistant":
            raise APIError(400, "continue_final_message needs the last message to be the assistant's", "messages")
        if getattr(self.tok, "chat_template", None) is None:  # the built-in world's raw-prompt convention
            ids = self.tok("".join(m["content"] for m in msgs))["input_ids"]
        else:
            try:
                text = self.tok.apply_chat_template(
                    msgs, add_generation_prompt=add, continue_final_message=cont, tokenize=False
                )
            except Exception as e:  # a template that rejects these messages (roles out of order, ...)
                raise APIError(400, f"the chat template rejected the messages: {e}", "messages") from None
            ids = self.tok(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise APIError(400, "the messages encode to no tokens: send some content", "messages")
        return ids

    def _prepare(self, body: Sampling, prompts: list[list[int]], texts: list[str], default_max: int) -> Prepared:
        cfg = self.config
        if body.n > cfg.max_n:
            raise APIError(400, f"n must be <= {cfg.max_n}, this server's --max-n (got {body.n})", "n")
        if body.n * len(prompts) > cfg.max_n:
            raise APIError(400, f"{body.n} samples of {len(prompts)} prompts is over --max-n of {cfg.max_n}", "n")
        max_tokens = default_max if body.max_tokens is None else body.max_tokens
        if max_tokens > cfg.max_tokens:
            raise APIError(400, f"max_tokens must be <= {cfg.max_tokens}, this server's --max-tokens", "max_tokens")
        score_only = max_tokens == 0
        for i, ids in enumerate(prompts):
            if self.context and len(ids) >= self.context + score_only:
                raise APIError(
                    400,
                    f"prompt {i} has {len(ids)} tokens, over the model's context of {self.context}: shorten it",
                    "prompt",
                )
        temperature = 1.0 if body.temperature is None else body.temperature
        params = SamplingParams(
            temperature=0.0 if temperature < GREEDY_BELOW else temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=max(0, body.top_k or 0),
            max_new_tokens=max(1, max_tokens),
            n=body.n,
            stop=(body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ()),
            seed=body.seed,
            ignore_eos=body.ignore_eos,
        )
        steering: tuple[str | None, float | None] = (None, None)
        if body.steering is not None:
            name, strength = (
                (body.steering, None)
                if isinstance(body.steering, str)
                else (body.steering.name, body.steering.strength)
            )
            if name not in self.engine.steering:
                have = ", ".join(sorted(self.engine.steering)) or "none (start the server with --steer NAME=PATH)"
                raise APIError(400, f"unknown steering artifact {name!r}: loaded are {have}", "steering")
            steering = (name, strength)
        return Prepared(prompts, texts, params, steering, score_only)

    def _check_cap(self, prep: Prepared, scored: int) -> None:
        """Refuse up front a request whose tokens (at most every row to its cap, plus scored ones) pass the cap."""
        cap = self.config.max_request_tokens
        n, max_new = prep.params.n, 0 if prep.score_only else prep.params.max_new_tokens
        worst = scored + sum(n * min(max_new, (self.context or 1 << 62) - len(p)) for p in prep.prompts)
        if worst > cap:
            raise APIError(
                400,
                f"this request may use {worst} tokens ({len(prep.prompts)} prompts x n {n} x max_tokens {max_new}"
                + (f", plus {scored} scored" if scored else "")
                + f"), over the server's --max-request-tokens of {cap}: lower n or max_tokens, or split it",
                "max_tokens",
                "request_too_large",
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
    ):
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        head = {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.config.model_name,
        }
        if body.scaling is not None:
            return {**head, **await self._scaling(body, prep, request, chat, want_lp, echo)}
        measure = want_lp and echo
        self._check_cap(prep, sum(len(p) for p in prep.prompts) if measure else 0)
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
        else:
            choices = [
                self.fmt.completion_choice(i, row, want_lp, top, prep.texts[i // n] if echo else None)
                for i, row in enumerate(res.rows)
            ]
        self._count(res.prompt_tokens, res.completion_tokens)
        return {
            **head,
            "choices": choices,
            "usage": usage(res),
            "steerable": {"forward_tokens": res.forward_tokens, "seconds": round(res.seconds, 4)},
        }

    def _count(self, prompt: int, completion: int) -> None:
        self.metrics.tokens.labels("prompt").inc(prompt)
        self.metrics.tokens.labels("completion").inc(completion)

    # ---- the engine ------------------------------------------------------------------------------

    def _submit(self, item: GenRequest | Job) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def emit(kind: str, payload) -> None:
            loop.call_soon_threadsafe(q.put_nowait, (kind, payload))

        item.emit = emit
        try:
            self.engine.submit(item)
        except ConfigError as e:
            raise APIError(503, str(e)) from None
        return q

    @staticmethod
    async def _result(q: asyncio.Queue):
        while True:
            kind, payload = await q.get()
            if kind == "done":
                return payload
            if kind == "error":
                raise as_api_error(payload)

    async def _wait(self, q: asyncio.Queue, request: Request):
        """The request's result; :class:`ClientGone` as soon as its client disconnects."""
        result = asyncio.ensure_future(self._result(q))
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

    async def _scaling(self, body: Sampling, prep: Prepared, request: Request, chat: bool, want_lp: bool, echo: bool):
        from steerable.search.registry import UNSCORED, make_strategy
        from steerable.tasks.answers import make_checker

        spec = body.scaling
        assert spec is not None
        if prep.params.n != 1 or body.stream:
            raise APIError(400, "a scaling request returns one chosen sample: use n = 1 and no streaming", "scaling")
        if len(prep.prompts) != 1:
            raise APIError(400, "a scaling request takes one prompt", "prompt")
        if want_lp or echo or prep.score_only:
            raise APIError(400, "a scaling request returns no logprobs and no echo: leave them out", "scaling")
        if spec.budget > self.config.max_budget:
            raise APIError(400, f"scaling.budget must be <= {self.config.max_budget} (got {spec.budget})", "scaling")
        if spec.max_step_tokens > self.config.max_tokens:
            raise APIError(400, f"scaling.max_step_tokens must be <= {self.config.max_tokens}", "scaling")
        try:
            checker = make_checker(spec.answer_format, spec.answer_regex, what="scaling.answer_regex")
        except SteerableError as e:
            raise APIError(400, str(e), "scaling.answer_regex") from None
        try:
            strategy = make_strategy(spec.method, checker.extract, spec.options)
        except SteerableError as e:
            raise APIError(400, f"scaling: {e}", "scaling.options") from None
        scorer = None
        if spec.method not in UNSCORED:
            name = spec.scorer or next(iter(self.config.scorers), None)
            if name not in self.config.scorers:
                have = ", ".join(sorted(self.config.scorers)) or "none (start the server with --prm builtin)"
                raise APIError(400, f"{spec.method} needs a scorer; {name!r} is not loaded: use {have}", "scaling")
            scorer = self.config.scorers[name]
        ids = prep.prompts[0]
        run = ScalingRun(
            strategy,
            scorer,
            spec.budget,
            self.tok.decode(ids, skip_special_tokens=True),
            prep.params,
            spec.delimiter or ("\n" if self.config.model_name == "builtin" else "\n\n"),
            spec.max_step_tokens,
            steering=self._steering_factory(prep.steering),
            guard=Guard(self.config.max_request_tokens),
        )
        job = Job(lambda: run(self.engine.gen), None)  # type: ignore[arg-type]
        q = self._submit(job)
        try:
            res, seconds = await self._wait(q, request)
        except ClientGone:
            job.cancelled = run.guard.cancelled = True
            self.metrics.cancelled.labels("/v1/completions" if not chat else "/v1/chat/completions").inc()
            raise
        self._count(len(ids), res.cost.generated_tokens)
        choice: dict = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": res.text}
        else:
            choice["text"] = res.text
        return {
            "choices": [choice],
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": res.cost.generated_tokens,
                "total_tokens": len(ids) + res.cost.generated_tokens,
            },
            "steerable": {
                "method": res.method,
                "budget": res.budget,
                "answer": res.answer,
                "candidates": [
                    {"text": c.text, "answer": c.answer, "score": _finite(c.score), "weight": _finite(c.weight)}
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

        self._check_model(body.model)
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


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: what comes next is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _finite(x: float) -> float | None:
    import math

    return x if math.isfinite(x) else None


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
