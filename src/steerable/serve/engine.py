"""The serving engine: one worker thread owns the model; requests queue, and compatible ones decode together.

Continuous batching on our step-wise generator. Requests that sample alike
(temperature, top-p, top-k, steering) form a *group* with one running batch of
rows. Every loop turn the worker

1. takes what has queued: jobs (scaling runs, PRM scoring) run at once, between
   decode steps; new generation requests are prefilled and sampled one token
   as a batch of their own, then concatenated into their group's running batch
   (``Sequences.concat`` left-pads the KV caches to a common length);
2. decodes one token for every live row of every group (inside that group's
   steering context), hands each request its new text, and drops rows that hit
   EOS, a stop string, their ``max_tokens`` or the context length.

So a request that arrives while others decode joins them at the next token;
throughput grows with concurrency. Every row samples from its own random
stream (``seed`` given, or drawn at random when not), so a seeded request gives
the same text whatever it was batched with.

Streaming text never shows a stop string or part of one: text that could be
the start of a stop string is held back until it is resolved.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from steerable.errors import ConfigError, InputError
from steerable.lm.local import LocalGenerator
from steerable.lm.sequences import Sequences
from steerable.lm.types import SamplingParams
from steerable.serve.prefix import EnginePrefixCache, cache_space
from steerable.serve.requests import GenRequest, Job, RequestResult, Row, RowDelta, RowResult, Tracker
from steerable.streams import mix

__all__ = ["Engine", "GenRequest", "Job", "RequestResult", "RowDelta", "RowResult"]


@dataclass
class _Group:
    key: tuple
    params: SamplingParams
    steering: Callable[[], Any]
    seqs: Sequences | None = None
    rows: list[Row] = field(default_factory=list)


class Engine:
    """Owns ``generator`` (and anything else that touches the model) on one worker thread.

    ``generator`` None is an engine of jobs only (the images server: a diffusion run is one job); it must then
    be given no :class:`GenRequest`.
    """

    def __init__(
        self,
        generator: LocalGenerator | None,
        steering: dict[str, Any] | None = None,
        max_batch: int = 256,
        on_step: Callable[[int, int], None] | None = None,
        prefix_cache_mb: float = 0.0,
    ):
        self.gen = generator
        # KV of finished rows, reused by later prompts that start with their tokens (0: off)
        self.prefix = EnginePrefixCache(generator.model, prefix_cache_mb) if generator is not None else None
        self.steering = steering or {}  # name -> loaded artifact (vector or controller)
        self.max_batch = max_batch
        self.on_step = on_step  # (rows decoded, queue depth) after each decode step, for metrics
        self._queue: queue.Queue = queue.Queue()
        self._groups: dict[tuple, _Group] = {}
        self._trackers: dict[int, Tracker] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._next_prompt = 0  # prompt indices unique across requests: per-prompt steering state follows rows

    # ---- the outside ---------------------------------------------------------------------------

    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="steerable-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued and running, then end the worker."""
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, item: GenRequest | Job) -> None:
        if self._stop.is_set():
            raise ConfigError("the server is shutting down: retry on another replica")
        if self.gen is None and not isinstance(item, Job):
            raise ConfigError("this engine runs jobs only: it has no language model to generate with")
        self._queue.put(item)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def running_rows(self) -> int:
        return sum(len(g.rows) for g in self._groups.values())

    # ---- the worker ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            busy = any(g.rows for g in self._groups.values())
            try:
                item = self._queue.get(timeout=None if not busy and not self._stop.is_set() else 0.0)
            except queue.Empty:
                item = None
            admitted: list[GenRequest] = []
            while item is not None or not self._queue.empty():
                if item is None:
                    item = self._queue.get_nowait()
                    if item is None:
                        continue
                if isinstance(item, Job):
                    self._run_job(item)
                else:
                    admitted.append(item)
                item = None
                if self.running_rows + sum(r.params.n * len(r.prompts) for r in admitted) >= self.max_batch:
                    break
            if admitted:
                self._admit_many(admitted)
            if any(g.rows for g in self._groups.values()):
                self._decode_all()
            elif self._stop.is_set() and self._queue.empty():
                return
            # a group lives while it has rows: a group per (sampling, steering, strength) a client sends, and a
            # controller's per-prompt decisions in it, would otherwise outlive their requests and grow without end
            for key in [k for k, g in self._groups.items() if not g.rows]:
                del self._groups[key]

    def _run_job(self, job: Job) -> None:
        if job.cancelled:
            return
        try:
            job.emit("done", job.fn())
        except Exception as e:  # the request fails; the worker lives on
            job.emit("error", e)

    def _group(self, req: GenRequest) -> _Group:
        p = req.params
        key = (p.temperature, p.top_p, p.top_k, p.ignore_eos, req.steering, req.strength)
        g = self._groups.get(key)
        if g is None:
            if req.steering is None:
                from contextlib import nullcontext

                ctx: Callable[[], Any] = nullcontext
            else:
                from steerable.steer.artifact import steering_context

                # one object per group, entered around every call: a controller keeps its per-prompt
                # decisions in it from a prompt's prefill to its last token
                steering = steering_context(self.steering[req.steering], self.gen.model, strength=req.strength)
                ctx = lambda: steering  # noqa: E731
            params = SamplingParams(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k, ignore_eos=p.ignore_eos)
            g = self._groups[key] = _Group(key, params, ctx)
        return g

    def _admit_many(self, reqs: list[GenRequest]) -> None:
        """Admit requests; those of one group are prefilled together in one model call.

        Each prompt but its last token is run into the KV cache (one call for
        every new prompt of the group); the last token is left pending, so the
        group's next decode step feeds it along with the running rows' tokens
        and samples everyone's next token in the same call. A controller
        decides from its prefill and must see whole prompts: its groups (and
        one-token prompts) take :meth:`_admit`, a prefill and a sample per request.
        """
        from steerable.steer.controller import Controller

        by_group: dict[tuple, list[GenRequest]] = {}
        for req in reqs:
            if req.cancelled:
                continue
            try:
                g = self._group(req)
            except Exception as e:
                req.emit("error", e)
                continue
            whole = (
                isinstance(self.steering.get(req.steering), Controller)
                or any(len(p) < 2 for p in req.prompts)
                or req.prompt_logprobs is not None
                or req.score_only
            )
            if whole:
                self._admit(req)
            else:
                by_group.setdefault(g.key, []).append(req)
        for key, group_reqs in by_group.items():
            self._prefill_together(self._groups[key], group_reqs)

    def _space(self, req: GenRequest):
        """Which stored rows a request may reuse (None: its steering makes its KV its own)."""
        return cache_space(req.steering, req.strength, self.steering.get(req.steering))

    def _too_long(self, req: GenRequest) -> InputError | None:
        limit = getattr(self.gen.model.config, "max_position_embeddings", None)
        worst = max((len(p) for p in req.prompts), default=0)
        if limit and worst >= limit + req.score_only:  # a scored prompt may fill the context; one to sample may not
            return InputError(f"the prompt has {worst} tokens, over the model's context of {limit}")
        return None

    def _track(self, req: GenRequest, cached: int = 0) -> tuple[list[Row], list[int]]:
        """The request's rows (prompt-major, ``n`` per prompt) and their random streams; its tracker registered.
        ``cached``: prompt tokens its rows took from the prefix cache (not run by the model)."""
        seed = req.params.seed if req.params.seed is not None else random.getrandbits(62)
        count = len(req.prompts) * req.params.n
        rows = [Row(req, k, req.params.stop, req.params.max_new_tokens) for k in range(count)]
        prompt_tokens = sum(len(p) for p in req.prompts)
        self._trackers[id(req)] = Tracker(req, rows, prompt_tokens, prompt_tokens - cached, left=count,
                                          cached_tokens=cached)  # fmt: skip
        return rows, [mix(seed, k) for k in range(count)]

    def _prefill_together(self, g: _Group, reqs: list[GenRequest]) -> None:
        ok: list[GenRequest] = []
        for req in reqs:
            err = self._too_long(req)
            if err is not None:
                req.emit("error", err)
            else:
                ok.append(req)
        if not ok:
            return
        ids = [list(p) for req in ok for p in req.prompts]
        base = self._next_prompt
        self._next_prompt += len(ids)
        index = [base + i for i in range(len(ids))]
        space = self._space(ok[0])  # one group: one steering
        if self.prefix is not None:
            seqs, cached = self.prefix.start(ids, index, space)
        else:
            seqs, cached = Sequences(ids, [len(x) for x in ids], index), [0] * len(ids)
        try:
            with g.steering():
                self.gen.prefill(seqs, hold_last=True)  # the last tokens go with the group's next decode step
        except Exception as e:
            for req in ok:
                req.emit("error", e)
            return
        order, rows, rngs, at = [], [], [], 0
        for req in ok:
            req_rows, req_rngs = self._track(req, sum(cached[at : at + len(req.prompts)]))
            rows.extend(req_rows)
            rngs.extend(req_rngs)
            for _ in req.prompts:
                order.extend([at] * req.params.n)
                at += 1
        if order != list(range(len(ids))):
            seqs = seqs.select(order)
        seqs.rngs = rngs
        g.seqs = seqs if g.seqs is None or not g.rows else Sequences.concat([g.seqs, seqs])
        g.rows = g.rows + rows if g.rows else rows

    def _admit(self, req: GenRequest) -> None:
        """Prefill the request's prompts (measuring them for echo), sample their first token, join the group."""
        if req.cancelled:
            return
        try:
            g = self._group(req)
            n = req.params.n
            ids = [list(p) for p in req.prompts]
            if not ids or any(not x for x in ids):
                raise InputError("a prompt encodes to no tokens: send a non-empty prompt")
            err = self._too_long(req)
            if err is not None:
                raise err
            with g.steering():
                base = self._next_prompt
                self._next_prompt += len(ids)
                seqs = Sequences(ids, [len(x) for x in ids], [base + i for i in range(len(ids))])
                measured = None
                if n > 1 or req.prompt_logprobs is not None:  # each prompt once, then fork; steering sees it whole
                    measured = self.gen.prefill(seqs, logprobs=req.prompt_logprobs)
                    if n > 1:
                        seqs = seqs.select([r for r in range(len(ids)) for _ in range(n)])
                rows, seqs.rngs = self._track(req)
                if measured is not None:
                    for row in rows:
                        row.prompt = measured[row.k // n]
                if req.score_only:
                    self._finish_unsampled(rows)
                    return
                out = self.gen.step(seqs, g.params, stop=(), max_tokens=1, top=req.top)
                report = getattr(g.steering(), "report", None)  # a controller: what it chose for these prompts
                if report is not None:
                    req.controller = report(range(base, base + len(ids)))
        except Exception as e:
            self._trackers.pop(id(req), None)
            req.emit("error", e)
            return
        keep = self._absorb(seqs, rows, out)
        if not keep:
            return
        sub = seqs.select(keep) if len(keep) < len(seqs) else seqs
        live = [rows[i] for i in keep]
        g.seqs = sub if g.seqs is None or not g.rows else Sequences.concat([g.seqs, sub])
        g.rows = g.rows + live if g.rows else live

    def _decode_all(self) -> None:
        decoded = 0
        for g in list(self._groups.values()):
            if not g.rows:
                continue
            # drop rows of requests the client gave up on
            alive = [i for i, r in enumerate(g.rows) if not r.req.cancelled]
            if len(alive) < len(g.rows):
                for r in g.rows:
                    if r.req.cancelled:
                        self._trackers.pop(id(r.req), None)
                if not alive:
                    g.rows, g.seqs = [], None
                    continue
                g.seqs = g.seqs.select(alive)
                g.rows = [g.rows[i] for i in alive]
            try:
                with g.steering():
                    top = max(r.req.top for r in g.rows)
                    out = self.gen.step(g.seqs, g.params, stop=(), max_tokens=1, top=top)
            except Exception as e:  # a failing batch fails its requests, not the server
                for r in g.rows:
                    t = self._trackers.pop(id(r.req), None)
                    if t is not None:
                        r.req.emit("error", e)
                g.rows, g.seqs = [], None
                continue
            decoded += len(g.rows)
            keep = self._absorb(g.seqs, g.rows, out)
            if not keep:
                g.rows, g.seqs = [], None
            elif len(keep) < len(g.rows):
                g.seqs = g.seqs.select(keep)
                g.rows = [g.rows[i] for i in keep]
        if self.on_step is not None:
            self.on_step(decoded, self._queue.qsize())

    def _absorb(self, seqs: Sequences, rows: list[Row], out) -> list[int]:
        """Take one step's tokens into the rows; returns the indices of rows that go on."""
        tok = self.gen.tokenizer
        keep = []
        for i, row in enumerate(rows):
            new = out.token_ids[i]
            if not new:
                continue
            row.ids.extend(new)
            row.logprobs.extend(out.logprobs[i])
            if row.req.top:
                row.top.extend(list(alts[: row.req.top]) for alts in out.top_logprobs[i])
            text = tok.decode(row.ids, skip_special_tokens=True)
            reason, stop_hit = out.finish_reasons[i], None
            cut = len(text)
            for s in row.stop:
                at = text.find(s, max(0, len(row.text) - len(s)))
                if at >= 0 and at < cut:
                    cut, stop_hit = at, s
            if stop_hit is None and row.req.stop_line is not None:
                cut = _line_stop(text, len(row.text), row.req.stop_line)
            row.text = text
            finish = None
            if stop_hit is None and cut < len(text):  # an action line ended: the client runs the tool
                finish, row.text = "stop", text[:cut]
            elif stop_hit is not None:
                finish = "stop"
                row.text = text[: cut + (len(stop_hit) if row.req.include_stop else 0)]
            elif reason == "eos":
                finish = "stop"
            elif len(row.ids) >= row.max_tokens or (reason == "length" and seqs.finished[i]):  # cap or context
                finish = "length"
            self._stream(row, final=finish is not None)
            if finish is None:
                keep.append(i)
                continue
            row.done = RowResult(row.text, row.ids, row.logprobs, finish, stop_hit, row.top, row.prompt)
            if self.prefix is not None:
                self.prefix.keep(seqs, i, self._space(row.req))
            self._row_done(row)
        return keep

    def _row_done(self, row: Row) -> None:
        t = self._trackers.get(id(row.req))
        if t is not None:
            t.left -= 1
            if t.finish_if_done():
                del self._trackers[id(row.req)]

    def _finish_unsampled(self, rows: list[Row]) -> None:
        """Rows of a request that asked for no tokens (``max_tokens`` 0, echo): done with their prompts measured."""
        for row in rows:
            row.done = RowResult("", [], [], "length", None, [], row.prompt)
            self._row_done(row)

    def _stream(self, row: Row, final: bool) -> None:
        """Send the row's new text, holding back what could still turn into a stop string."""
        if not row.req.stream:
            return
        text = row.text
        upto = len(text)
        if not final:
            while upto > row.sent and text[upto - 1] == "\ufffd":  # a character cut between tokens
                upto -= 1
            for s in row.stop:
                for k in range(min(len(s) - 1, upto - row.sent), 0, -1):
                    if text[upto - k : upto] == s[:k]:
                        upto = min(upto, len(text) - k)
                        break
        if upto <= row.sent and not (final and row.req.want_logprobs and row.sent_tokens < len(row.ids)):
            return
        delta = RowDelta(
            row.k,
            text[row.sent : upto],
            row.ids[row.sent_tokens :],
            row.logprobs[row.sent_tokens :],
            row.top[row.sent_tokens :],
        )
        row.sent, row.sent_tokens = max(row.sent, upto), len(row.ids)
        row.req.emit("delta", delta)


def _line_stop(text: str, before: int, stop_line: Callable[[str], bool]) -> int:
    """Where ``text`` is cut after its first line completed since ``before`` characters that ``stop_line``
    picks (past its newline), or ``len(text)``."""
    start = text.rfind("\n", 0, before) + 1
    while (end := text.find("\n", start)) >= 0:
        if stop_line(text[start:end]):
            return end + 1
        start = end + 1
    return len(text)
