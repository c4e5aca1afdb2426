"""Local generator over any Hugging Face causal LM, with a forkable KV cache.

Everything goes through one path: a batch of :class:`~steerable.lm.sequences.Sequences`
whose tokens not yet run through the model wait in ``pending``.
:meth:`LocalGenerator.step` feeds what is pending, samples, and repeats until
every row hits a stop string, EOS or the token cap. ``generate`` is ``start`` +
one ``step``; search strategies call ``step`` repeatedly and ``select`` /
``concat`` rows in between, so no prefix is ever run through the model twice.
:meth:`LocalGenerator.prefill` runs prompts into the cache without sampling
(the server prefills arriving prompts together, and scores prompts with it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from steerable.errors import ConfigError, InputError
from steerable.lm import cache as kv
from steerable.lm.base import Prompt
from steerable.lm.hooks import publish_call
from steerable.lm.sampling import sample, top_logprobs
from steerable.lm.sequences import Sequences, compact
from steerable.lm.types import Completion, SamplingParams, StepOutput, Usage

__all__ = ["LocalGenerator", "PromptLogprobs", "Sequences"]


@dataclass(frozen=True)
class PromptLogprobs:
    """What :meth:`LocalGenerator.prefill` measured of one row's prompt, token by token."""

    token_ids: list[int]
    logprobs: list[float | None]  # log p(token | the tokens before it); None for the first token
    top: list[list[tuple[int, float]]]  # the k most likely (token id, logprob) at each position, best first


class LocalGenerator:
    """Batched sampling and step-wise continuation on a local causal LM (a :class:`~steerable.lm.base.StepGenerator`).

    ``chat_template``: ``"auto"`` applies the tokenizer's chat template to plain
    string prompts when it has one; ``"never"`` feeds strings raw. Chat
    messages (lists of ``{"role", "content"}``) always use the template.
    """

    def __init__(self, model, tokenizer, chat_template: str = "auto"):
        if chat_template not in ("auto", "never"):
            raise ConfigError(f"chat_template must be 'auto' or 'never' (got {chat_template!r})")
        self.model = model
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.device = next(model.parameters()).device
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids, default=0)
        # stop strings -> ids of tokens containing one; bounded, since a server sees any stop strings clients send
        self._stop_token_cache: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self._pieces: list[tuple[int, str]] | None = None  # (id, text) of every non-special token, decoded once
        self.usage = Usage()  # cumulative over the generator's life

    remote = False  # a step is a model call here, not a round trip

    @classmethod
    def from_pretrained(cls, name_or_path: str = "builtin", device: str = "auto", dtype: str = "float32", **kw):
        from steerable.lm.loading import load_model

        model, tokenizer = load_model(name_or_path, device=device, dtype=dtype)
        return cls(model, tokenizer, **kw)

    # ---- prompts -------------------------------------------------------------------------------

    def encode(self, prompt: Prompt) -> list[int]:
        tok = self.tokenizer
        has_template = getattr(tok, "chat_template", None) is not None
        if isinstance(prompt, list):
            if not has_template:
                raise InputError("chat messages given but the tokenizer has no chat template: pass plain text prompts")
            text = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            return tok(text, add_special_tokens=False)["input_ids"]
        if not isinstance(prompt, str):
            raise InputError(f"a prompt must be a string or a list of chat messages (got {type(prompt).__name__})")
        if has_template and self.chat_template == "auto":
            text = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            return tok(text, add_special_tokens=False)["input_ids"]
        return tok(prompt)["input_ids"]

    def start(self, prompts: Sequence[Prompt], n: int = 1) -> Sequences:
        """A batch of ``n`` rows per prompt, prompt-major. Each prompt is prefilled once and then forked."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if len(prompts) == 0:
            raise InputError("no prompts given: pass at least one prompt")
        if n < 1:
            raise ConfigError(f"n must be >= 1 (got {n})")
        ids = [self.encode(p) for p in prompts]
        if any(len(x) == 0 for x in ids):
            raise InputError("a prompt encodes to no tokens: pass non-empty prompts")
        limit = getattr(self.model.config, "max_position_embeddings", None)
        for i, x in enumerate(ids):
            if limit and len(x) >= limit:
                raise InputError(f"prompt {i} has {len(x)} tokens, over the model's context of {limit}: shorten it")
        seqs = Sequences(ids, [len(x) for x in ids], list(range(len(ids))))
        if n == 1:
            return seqs
        # prefill each prompt once, next-token logits included, then fork: n samples cost one prompt pass,
        # and hooks (steering) see every prompt whole in one call
        self.prefill(seqs)
        return seqs.select([r for r in range(len(ids)) for _ in range(n)])

    # ---- the model call ------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(
        self,
        seqs: Sequences,
        rows: Sequence[int] | None = None,
        *,
        hold_last: bool = False,
        logprobs: int | None = None,
    ) -> list[PromptLogprobs] | None:
        """Run the pending tokens of ``rows`` (default: every row) into the KV cache, in one model call.

        Once nothing is pending, the next-token logits are kept, so the next
        :meth:`step` samples without another call. ``hold_last`` leaves each
        row's last pending token pending instead: a new prompt can then join a
        running batch and have that token fed by the batch's next decode step.

        ``logprobs`` (k >= 0) also measures the prompts, which must start the
        rows (an empty cache): for every token of each row's pending prompt,
        log p(token | the tokens before it) under the model as it runs now
        (steering included), ``None`` for the first token, and the k most
        likely tokens at each position. The call then keeps logits at every
        position ([rows, tokens, vocab]): ask only when the numbers are wanted.
        """
        rows = list(range(len(seqs))) if rows is None else list(rows)
        if not rows:
            return [] if logprobs is not None else None
        targets = {r: list(seqs.pending[r]) for r in rows}
        if logprobs is not None and any(int(seqs.lengths[r]) > 0 for r in rows):
            raise InputError("prefill measures logprobs from the start of a sequence: prefill before anything else")
        upto = {r: len(t) - 1 for r, t in targets.items()} if hold_last else None
        out = self._feed(seqs, rows, upto=upto, all_logits=logprobs is not None)
        if not hold_last and len(rows) == len(seqs) and not any(seqs.pending):
            seqs.next_logits = out[:, -1, :] if logprobs is not None else out
        else:
            seqs.next_logits = None
        if logprobs is None:
            return None
        width = out.shape[1]
        scored = []
        for r in rows:
            toks = targets[r]
            fed = len(toks) - 1 if hold_last else len(toks)
            # position width - fed + j holds token j and predicts token j + 1
            nxt = torch.tensor(toks[1:], device=out.device)
            logp = torch.log_softmax(out[r, width - fed : width - fed + len(nxt)].float(), dim=-1)
            chosen = logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1).tolist()
            scored.append(PromptLogprobs(toks, [None, *chosen], [[], *top_logprobs(logp, logprobs)]))
        return scored

    @torch.inference_mode()
    def _feed(
        self, seqs: Sequences, rows: list[int], upto: dict[int, int] | None = None, all_logits: bool = False
    ) -> torch.Tensor:
        """Run the pending tokens of ``rows`` (the first ``upto[r]`` of them) through the model; others get padding.

        Returns next-token logits ``[batch, vocab]`` (rows not fed hold garbage), or with ``all_logits``
        the logits at every position of the call ``[batch, width, vocab]`` (left-padded per row).
        """
        feed = {r: seqs.pending[r] if upto is None else seqs.pending[r][: upto[r]] for r in rows}
        width = max((len(v) for v in feed.values()), default=0)
        batch = len(seqs)
        if width == 0:
            return torch.zeros((batch, 1, 1) if all_logits else (batch, 1), device=self.device)
        # one tensor per field built from plain lists: per-row tensor writes cost more than the model at batch 64
        lengths = seqs.lengths.tolist()
        ids_rows, mask_rows, pos_rows = [], [], []
        for r in range(batch):
            toks = feed.get(r, ())
            pad = width - len(toks)
            ids_rows.append([self.pad_id] * pad + list(toks))
            mask_rows.append([0] * pad + [1] * len(toks))
            pos_rows.append([0] * pad + list(range(lengths[r], lengths[r] + len(toks))))
        ids = torch.tensor(ids_rows, dtype=torch.long)
        block_mask = torch.tensor(mask_rows, dtype=torch.long)
        pos = torch.tensor(pos_rows, dtype=torch.long)
        real = sum(len(t) for t in feed.values())
        dev = self.device
        mask = torch.cat([seqs.mask, block_mask.to(seqs.mask.device)], dim=1)
        past = seqs.mask.shape[1]
        # for steering hooks: prompt/generated positions, and which prompt each row came from
        with publish_call(torch.tensor(seqs.prompt_lens, device=dev), torch.tensor(seqs.prompt_index, device=dev)):
            out = self.model(
                input_ids=ids.to(dev),
                attention_mask=mask.to(dev),
                position_ids=pos.to(dev),
                cache_position=torch.arange(past, past + width, device=dev),
                use_cache=True,
                logits_to_keep=0 if all_logits else 1,
                **{kv.CACHE_KWARG: seqs.cache if seqs.cache is not None else kv.new_cache(self.model)},
            )
        seqs.cache = kv.output_cache(out)
        seqs.mask = mask
        seqs.lengths = seqs.lengths + block_mask.sum(1).to(seqs.lengths.device)
        for r, toks in feed.items():
            seqs.pending[r] = seqs.pending[r][len(toks) :]
        self.usage = self.usage + Usage(forward_tokens=real, padding_slots=batch * width - real)
        return out.logits.float() if all_logits else out.logits[:, -1, :].float()

    @torch.inference_mode()
    def logits(self, seqs: Sequences) -> torch.Tensor:
        """Next-token logits ``[batch, vocab]`` for every row, feeding whatever is pending."""
        rows = [r for r in range(len(seqs)) if seqs.pending[r]]
        if not rows and seqs.next_logits is not None:
            return seqs.next_logits
        if len(rows) < len(seqs) and seqs.next_logits is None:
            raise InputError("some rows have nothing pending and no logits: take logits of the whole batch at once")
        new = self._feed(seqs, rows)
        if len(rows) < len(seqs):  # rows with nothing new keep the logits they had
            idx = torch.tensor(rows, device=new.device)
            new = seqs.next_logits.to(new.device).index_copy(0, idx, new[idx])
        seqs.next_logits = new
        return seqs.next_logits

    def append(self, seqs: Sequences, texts: Sequence[str]) -> None:
        """Append fixed text to each row (``""`` leaves a row alone); it is run on the next call."""
        if len(texts) != len(seqs):
            raise InputError(f"append needs one text per row: got {len(texts)} for {len(seqs)} rows")
        for r, text in enumerate(texts):
            if not text:
                continue
            toks = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            self.usage = self.usage + Usage(appended_tokens=len(toks))
            # the row's next-token logits are stale now: the appended tokens are fed on the next call
            seqs.token_ids[r].extend(toks)
            seqs.pending[r].extend(toks)
            seqs.finished[r] = False

    @staticmethod
    def concat(batches: Sequence[Sequences]) -> Sequences:
        """One batch of every row of ``batches``, in order (their caches joined)."""
        return Sequences.concat(batches)

    def texts(self, seqs: Sequences) -> list[str]:
        """Each row's generated text, special tokens dropped."""
        return [self.tokenizer.decode(seqs.generated(r), skip_special_tokens=True) for r in range(len(seqs))]

    def generated_tokens(self, seqs: Sequences, row: int) -> int:
        return len(seqs.generated(row))

    # ---- sampling ------------------------------------------------------------------------------

    def step(
        self,
        seqs: Sequences,
        params: SamplingParams,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        rows: Sequence[int] | None = None,
        top: int = 0,
    ) -> StepOutput:
        """Extend every unfinished row (or only those of ``rows``) until a stop string, EOS or ``max_tokens``.

        ``stop`` and ``max_tokens`` default to ``params.stop`` and
        ``params.max_new_tokens``. The new text of a row includes its stop string
        (later steps continue after it). Finished rows (EOS) are left alone.
        ``params.seed`` seeds the rows' own random streams the first time a
        batch is sampled; later steps continue those streams. ``top`` k > 0 also
        returns the k most likely tokens at each sampled position.
        """
        stop = tuple(params.stop if stop is None else stop)
        if any(not s for s in stop):
            raise ConfigError("stop strings must be non-empty (got ''); drop the empty one")
        max_tokens = params.max_new_tokens if max_tokens is None else max_tokens
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1 (got {max_tokens})")
        if seqs.rngs is None and params.seed is not None and not params.greedy:
            seqs.seed(params.seed)
        before = self.usage
        batch = len(seqs)
        wanted = set(range(batch) if rows is None else rows)
        active = [not f and r in wanted for r, f in enumerate(seqs.finished)]
        new_tokens: list[list[int]] = [[] for _ in range(batch)]
        new_logprobs: list[list[float]] = [[] for _ in range(batch)]
        new_top: list[list[list[tuple[int, float]]]] = [[] for _ in range(batch)]
        reasons: list[str | None] = [None] * batch
        stop_tokens = self._stop_tokens(stop)
        long_stops = [s for s in stop if len(s) > 1]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        logits = seqs.next_logits
        for _ in range(max_tokens):
            rows = [r for r in range(batch) if active[r]]
            if not rows:
                break
            pend = [r for r in rows if seqs.pending[r]]
            if logits is None or len(pend) == len(rows):
                logits = self._feed(seqs, rows)
            elif pend:  # some rows had text appended since their logits were taken: refresh only those
                fresh = self._feed(seqs, pend)
                at = torch.tensor(pend, device=fresh.device)
                logits = logits.to(fresh.device).index_copy(0, at, fresh[at])
            seqs.next_logits = None
            idx = torch.tensor(rows)
            streams = None
            if seqs.rngs is not None:  # (row seed, tokens so far): a row's draw depends on nothing else
                streams = torch.tensor([[seqs.rngs[r], len(seqs.token_ids[r])] for r in rows], dtype=torch.long)
            block = logits[idx.to(logits.device)]
            chosen, logp = sample(block, params, streams)
            alternatives = top_logprobs(torch.log_softmax(block.float(), dim=-1), top) if top else None
            hit_eos = (
                torch.isin(chosen, torch.tensor(self.eos_ids, dtype=chosen.dtype))
                if self.eos_ids and not params.ignore_eos
                else None
            )
            hit_stop = torch.isin(chosen, stop_tokens) if stop_tokens is not None else None
            for j, r in enumerate(rows):
                tok = int(chosen[j])
                new_tokens[r].append(tok)
                new_logprobs[r].append(float(logp[j]))
                if alternatives is not None:
                    new_top[r].append(alternatives[j])
                seqs.token_ids[r].append(tok)
                seqs.pending[r] = [tok]
                if hit_eos is not None and hit_eos[j]:
                    reasons[r], active[r] = "eos", False
                    seqs.finished[r] = True
                elif (
                    hit_stop is not None
                    and hit_stop[j]
                    or long_stops
                    and _tail_has_stop(self.tokenizer, new_tokens[r], long_stops)
                ):
                    reasons[r], active[r] = "stop", False
                elif limit and len(seqs.token_ids[r]) >= limit:
                    reasons[r], active[r] = "length", False
                    seqs.finished[r] = True
            logits = None
        for r in range(batch):
            if active[r]:
                reasons[r] = "length"
        compact(seqs)
        self.usage = self.usage + Usage(generated_tokens=sum(len(t) for t in new_tokens))
        usage = self.usage - before
        return StepOutput(
            texts=tuple(self.tokenizer.decode(t, skip_special_tokens=True) if t else "" for t in new_tokens),
            token_ids=tuple(tuple(t) for t in new_tokens),
            logprobs=tuple(tuple(lp) for lp in new_logprobs),
            finish_reasons=tuple(reasons),
            usage=usage,
            top_logprobs=tuple(tuple(tuple(a) for a in row) for row in new_top) if top else (),
        )

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        """``params.n`` completions per prompt, prompt-major. Text stops before the stop string."""
        before = self.usage
        seqs = self.start(prompts, n=params.n)
        prompt_tokens = sum(seqs.prompt_lens[r] for r in range(0, len(seqs), params.n))
        self.usage = self.usage + Usage(prompt_tokens=prompt_tokens)
        out = self.step(seqs, params)
        return self._completions(seqs, out, params.stop, self.usage - before)

    def _completions(self, seqs: Sequences, out: StepOutput, stop: tuple[str, ...], usage: Usage) -> list[Completion]:
        """Completions with their own usage; the usages of one call add up to ``usage`` (padding aside).

        A prompt's prefill is charged to its first sample. Each sample's last
        token is never fed back, so a prompt of p tokens with samples of
        lengths l_j costs ``p + sum(l_j - 1)`` forward tokens.
        """
        comps, seen = [], set()
        for r in range(len(seqs)):
            text, reason = out.texts[r], out.finish_reasons[r]
            toks, lps = out.token_ids[r], out.logprobs[r]
            first = seqs.prompt_index[r] not in seen
            seen.add(seqs.prompt_index[r])
            p = seqs.prompt_lens[r]
            row_usage = Usage(
                prompt_tokens=p if first else 0,
                generated_tokens=len(toks),
                forward_tokens=max(len(toks) - 1, 0) + (p if first else 0),
            )
            if reason == "eos":
                reason = "stop"
                toks, lps = toks[:-1], lps[:-1]
                text = self.tokenizer.decode(list(toks), skip_special_tokens=True)
            elif reason == "stop":
                cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
                text = text[:cut]
            comps.append(Completion(seqs.prompt_index[r], text, tuple(toks), tuple(lps), reason or "length", row_usage))
        return comps

    def _stop_tokens(self, stop: tuple[str, ...]) -> torch.Tensor | None:
        """Ids of the tokens whose text contains a stop string (found once per stop tuple, the last 256 kept)."""
        if not stop:
            return None
        hit = self._stop_token_cache.get(stop)
        if hit is not None:
            self._stop_token_cache.move_to_end(stop)
            return hit
        if self._pieces is None:
            special = set(self.tokenizer.all_special_ids)
            vocab = sorted(set(self.tokenizer.get_vocab().values()) - special)
            self._pieces = list(zip(vocab, self.tokenizer.batch_decode([[i] for i in vocab]), strict=True))
        ids = [i for i, piece in self._pieces if any(s in piece for s in stop)]
        self._stop_token_cache[stop] = out = torch.tensor(ids, dtype=torch.long)
        if len(self._stop_token_cache) > 256:
            self._stop_token_cache.popitem(last=False)
        return out


def _eos_ids(model, tokenizer) -> list[int]:
    ids = getattr(model.generation_config, "eos_token_id", None) if hasattr(model, "generation_config") else None
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return []
    return [ids] if isinstance(ids, int) else list(ids)


def _tail_has_stop(tokenizer, toks: list[int], stops: list[str]) -> bool:
    longest = max(map(len, stops))
    tail = tokenizer.decode(toks[-(longest + 1) :], skip_special_tokens=True)
    return any(s in tail for s in stops)
