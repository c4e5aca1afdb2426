"""What passes between the HTTP layer and the engine: requests, jobs, and what comes back row by row."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from steerable.lm.local import PromptLogprobs
from steerable.lm.types import SamplingParams

Emit = Callable[[str, Any], None]  # ("delta", RowDelta) | ("done", RequestResult) | ("error", Exception)


@dataclass
class GenRequest:
    prompts: list[list[int]]  # token ids of each prompt (the HTTP layer applies chat templates)
    params: SamplingParams  # n, max_new_tokens, stop, seed, temperature, top_p, top_k
    emit: Emit
    steering: str | None = None  # a loaded artifact's name
    strength: float | None = None
    include_stop: bool = False  # vLLM's include_stop_str_in_output
    want_logprobs: bool = False
    top: int = 0  # the most likely alternatives to return at each generated token
    prompt_logprobs: int | None = None  # echo: measure the prompts' tokens too, with this many alternatives
    score_only: bool = False  # max_tokens 0: measure the prompts, generate nothing
    stream: bool = True  # False: no per-token deltas, only the result (no event-loop wake-up per token)
    stop_line: Callable[[str], bool] | None = None  # a row stops after a generated line this is true of (tool calls)
    cancelled: bool = False  # the client left: its rows are dropped at the next step
    controller: dict | None = None  # steered by a controller: what it chose for these prompts (set at prefill)
    arrived: float = field(default_factory=time.perf_counter)


@dataclass
class RowDelta:
    row: int  # index among the request's rows (prompt-major, n per prompt)
    text: str
    token_ids: list[int]
    logprobs: list[float]
    top: list[list[tuple[int, float]]] = field(default_factory=list)


@dataclass
class RowResult:
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # stop | length
    stop_reason: str | None  # the stop string matched (None: EOS or length)
    top: list[list[tuple[int, float]]] = field(default_factory=list)  # alternatives at each token (with req.top)
    prompt: PromptLogprobs | None = None  # the row's prompt, measured (with req.prompt_logprobs)


@dataclass
class RequestResult:
    rows: list[RowResult]
    prompt_tokens: int
    completion_tokens: int
    forward_tokens: int  # tokens the model ran for this request (prefill + fed-back samples)
    seconds: float
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache instead of prefilled


@dataclass
class Row:
    req: GenRequest
    k: int
    stop: tuple[str, ...]
    max_tokens: int
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)
    prompt: PromptLogprobs | None = None
    text: str = ""
    sent: int = 0  # characters of ``text`` already streamed
    sent_tokens: int = 0
    done: RowResult | None = None


@dataclass
class Tracker:
    req: GenRequest
    rows: list[Row]
    prompt_tokens: int
    forward_tokens: int = 0
    left: int = 0
    cached_tokens: int = 0

    def finish_if_done(self) -> bool:
        if self.left > 0:
            return False
        results = [r.done for r in self.rows]
        gen = sum(len(r.ids) for r in self.rows)
        self.req.emit(
            "done",
            RequestResult(
                results,  # type: ignore[arg-type]
                self.prompt_tokens,
                gen,
                self.forward_tokens + gen - sum(1 for r in self.rows if r.ids),  # a last token is never fed
                time.perf_counter() - self.req.arrived,
                self.cached_tokens,
            ),
        )
        return True


@dataclass
class Job:
    """Work that needs the model but is not token streaming: a scaling run, PRM scores."""

    fn: Callable[[], Any]
    emit: Emit
    cancelled: bool = False  # the client left before the job started: it is skipped
