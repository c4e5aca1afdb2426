"""The step-wise process over any OpenAI-compatible server (vLLM, SGLang, ``steerable serve``).

A step is one request per live row that continues the row's text up to the
delimiter: raw completions (``prompt`` = prompt + text so far), or chat with
vLLM's ``continue_final_message`` (``mode="chat"``).
``include_stop_str_in_output`` keeps the delimiter, and ``stop_reason`` tells
a delimiter from EOS (without it: the text ending in the delimiter). Every row
has its own seed stream (forks branch off, as in the local generator), so a
run is reproducible on a server that honours ``seed``. On our own server a
step for all rows goes as one request (each prompt of a request samples from
its own stream there).

Usage comes from the server's ``usage`` (see :mod:`steerable.lm.http`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from steerable.errors import ConfigError, InputError
from steerable.lm.http import HTTPGenerator, params_body
from steerable.lm.types import SamplingParams
from steerable.search.process import Completes, Forces, StepCapped, TokenBudgeted
from steerable.streams import mix


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
class HTTPProcess(TokenBudgeted, Forces, Completes, StepCapped):
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
        return HTTPState(prompt, [""] * n, [mix(base, r) for r in range(n)], [False] * n, [False] * n, [0] * n, [0] * n)

    def size(self, state: HTTPState) -> int:
        return len(state.texts)

    def is_terminal(self, state: HTTPState) -> list[bool]:
        return [f or c for f, c in zip(state.finished, state.capped, strict=True)]

    def _request(self, state: HTTPState, r: int, cap: int, stop: bool = True) -> tuple[int, dict]:
        g = self.generator
        body = {"model": g.model, "max_tokens": cap, "n": 1, **params_body(self.params)}
        body["seed"] = mix(state.seeds[r], len(state.texts[r]))
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
        body = {"model": g.model, "max_tokens": cap, "n": 1, "logprobs": 0, **params_body(self.params)}
        body["seed"] = mix(state.seeds[rows[0]], len(state.texts[rows[0]]), len(rows))
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

    def force(self, state: HTTPState, row: int, step: str, final: bool = False) -> None:
        state.texts[row] += step
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
            seeds.append(state.seeds[r] if k == 0 else mix(state.seeds[r], k, len(state.texts[r])))
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
