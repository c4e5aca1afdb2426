"""Token-prefix KV caching for models that score text (PRMs, ORMs, judges read by logits).

Search scores a partial solution after every step, and each partial is its
parent plus one step. Re-running the whole text each time makes scoring
quadratic in the solution length and, with a learned PRM, dominates the run.
:class:`PrefixCache` remembers the KV cache (and a small per-position output)
of every row it ran, keyed by the exact token ids; a later row that starts
with a remembered row's ids runs only its new tokens. This is the idea of
vLLM's automatic prefix caching and SGLang's RadixAttention, done at row
granularity because our rows grow one step at a time.

Keys are exact token-id sequences (a 64-bit rolling hash finds candidates, the
ids are then compared), so a hit is always correct whatever the tokenizer
does. Memory is bounded: least recently used rows are dropped past
``max_mb``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steerable.errors import InputError
from steerable.lm import cache as kv


@dataclass
class _Row:
    ids: tuple[int, ...]
    keys: list[torch.Tensor]  # per layer [heads, len, dim]
    values: list[torch.Tensor]
    out: torch.Tensor  # [len, k] reduced outputs


def kv_bytes(keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in (*keys, *values))


@dataclass
class Entry:
    ids: tuple[int, ...]
    data: Any  # what its owner computed over ``ids`` (KV tensors, outputs)
    nbytes: int
    keys: list[int]  # its keys in the index


def _prefix_hashes(ids: Sequence[int]) -> list[int]:
    """``h[i]`` identifies ``ids[:i + 1]``."""
    out, h = [], 0
    for t in ids:
        h = hash((h, t))
        out.append(h)
    return out


class PrefixStore:
    """Token rows and what was computed over them, least recently used dropped past ``max_bytes``.

    :meth:`longest` finds the stored row sharing the longest prefix with a
    query, exactly (hashes find candidates, ids are compared). A row is
    indexed by its whole length and, with ``block`` > 0, at every multiple of
    ``block`` tokens as well, so a query that diverges from a stored row after
    a shared part still finds it (vLLM's block hashes, our rows kept whole).
    """

    def __init__(self, max_bytes: int, block: int = 0):
        self.max_bytes, self.block = max_bytes, block
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._index: dict[int, int] = {}  # prefix hash -> key of an entry holding that prefix
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._index.clear()
        self.nbytes = 0

    def longest(self, ids: Sequence[int], whole: bool = True) -> tuple[Entry, int] | None:
        """``(entry, n)``: an entry whose first ``n`` ids are the query's, ``n`` as large as the index finds
        (``whole``: only entries that are a prefix of the query as a whole, ``n = len(entry.ids)``)."""
        if not self._entries:
            return None
        ids = tuple(ids)
        hashes = _prefix_hashes(ids)
        for n in range(len(ids), 0, -1):
            key = self._index.get(hashes[n - 1])
            e = self._entries.get(key) if key is not None else None
            if e is None or len(e.ids) < n or e.ids[:n] != ids[:n] or (whole and len(e.ids) != n):
                continue
            while n < min(len(e.ids), len(ids)) and e.ids[n] == ids[n]:  # the common part past the index point
                n += 1
            self._entries.move_to_end(key)
            return e, n
        return None

    def put(self, ids: Sequence[int], data: Any, nbytes: int) -> None:
        if nbytes > self.max_bytes or not ids:
            return
        hashes = _prefix_hashes(ids)
        key = hashes[-1]
        self._drop(key)
        points = [n for n in range(self.block, len(ids), self.block)] if self.block > 0 else []
        keys = [hashes[n - 1] for n in points] + [key]
        self._entries[key] = Entry(tuple(ids), data, nbytes, keys)
        for k in keys:
            self._index[k] = key
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: int) -> None:
        e = self._entries.pop(key, None)
        if e is None:
            return
        self.nbytes -= e.nbytes
        for k in e.keys:
            if self._index.get(k) == key:
                del self._index[k]


class PrefixCache:
    """Run token rows through ``model``, reusing the KV cache of any earlier row that is a prefix.

    ``reduce`` maps the model's output logits ``[batch, time, n]`` to the small
    ``[batch, time, k]`` tensor a scorer needs at every position (for a one-label
    PRM, the label logit; for a causal-LM PRM, two token logits), so the cache
    keeps ``k`` numbers per position instead of a vocabulary.
    """

    def __init__(
        self,
        model,
        reduce: Callable[[torch.Tensor], torch.Tensor],
        max_mb: float = 256.0,
        batch_size: int = 64,
        pad_id: int = 0,
    ):
        self.model, self.reduce, self.batch_size, self.pad_id = model, reduce, batch_size, pad_id
        self.max_bytes = int(max_mb * 2**20)
        self.device = next(model.parameters()).device
        self._rows = PrefixStore(self.max_bytes)
        self.calls = 0  # model calls
        self.forward_tokens = 0  # tokens actually run through the model
        self.reused_tokens = 0  # tokens served from the cache

    @property
    def _bytes(self) -> int:
        return self._rows.nbytes

    def clear(self) -> None:
        self._rows.clear()

    def _lookup(self, ids: list[int]) -> _Row | None:
        hit = self._rows.longest(ids)
        return hit[0].data if hit is not None else None

    def _store(self, ids: list[int], keys, values, out: torch.Tensor) -> None:
        if self.max_bytes <= 0:
            return
        nbytes = kv_bytes(keys, values) + out.numel() * out.element_size()
        self._rows.put(ids, _Row(tuple(ids), keys, values, out), nbytes)

    @torch.inference_mode()
    def __call__(self, rows: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Reduced outputs ``[len(row), k]`` for every position of every row."""
        results: list[torch.Tensor | None] = [None] * len(rows)
        todo: list[tuple[int, list[int], _Row | None]] = []
        for i, row in enumerate(rows):
            row = list(row)
            if not row:
                raise InputError("a text to score encodes to no tokens: pass non-empty prompts")
            hit = self._lookup(row)
            if hit is not None and len(hit.ids) == len(row):
                results[i] = hit.out
                self.reused_tokens += len(row)
            else:
                todo.append((i, row, hit))
        for start in range(0, len(todo), self.batch_size):
            self._run(todo[start : start + self.batch_size], results)
        return results  # type: ignore[return-value]

    def _run(self, chunk: list[tuple[int, list[int], _Row | None]], results: list) -> None:
        pre = [len(e.ids) if e is not None else 0 for _, _, e in chunk]
        new = [len(row) - p for (_, row, _), p in zip(chunk, pre, strict=True)]
        pmax, smax = max(pre), max(new)
        cache = kv.new_cache(self.model)
        kv._layers(cache)  # a sliding-window or recurrent cache cannot be sliced per row: say so up front
        if pmax:
            n_layers = len(next(e for _, _, e in chunk if e is not None).keys)
            for layer in range(n_layers):
                ks, vs = [], []
                for (_, _, e), p in zip(chunk, pre, strict=True):
                    if e is None:
                        ref = next(x for _, _, x in chunk if x is not None)
                        shape = (ref.keys[layer].shape[0], pmax, ref.keys[layer].shape[-1])
                        ks.append(ref.keys[layer].new_zeros(shape))
                        vs.append(ref.values[layer].new_zeros(shape))
                    else:
                        ks.append(torch.nn.functional.pad(e.keys[layer], (0, 0, pmax - p, 0)))
                        vs.append(torch.nn.functional.pad(e.values[layer], (0, 0, pmax - p, 0)))
                cache.update(torch.stack(ks), torch.stack(vs), layer)
        ids, mask, pos = [], [], []
        for (_, row, _), p, s in zip(chunk, pre, new, strict=True):
            ids.append(row[p:] + [self.pad_id] * (smax - s))  # right padding: causal attention never sees it
            mask.append([0] * (pmax - p) + [1] * (p + s) + [0] * (smax - s))
            pos.append(list(range(p, p + smax)))
        dev = self.device
        out = self.model(
            input_ids=torch.tensor(ids, device=dev),
            attention_mask=torch.tensor(mask, device=dev),
            position_ids=torch.tensor(pos, device=dev),
            use_cache=True,
            **{kv.CACHE_KWARG: cache},
        )
        reduced = self.reduce(out.logits).float()
        self.calls += 1
        self.forward_tokens += sum(new)
        self.reused_tokens += sum(pre)
        layers = [(layer.keys, layer.values) for layer in kv._layers(cache)]
        for b, ((i, row, e), p, s) in enumerate(zip(chunk, pre, new, strict=True)):
            tail = reduced[b, :s]
            full = torch.cat([e.out, tail]) if e is not None else tail.clone()
            results[i] = full
            lo, hi = pmax - p, pmax + s
            self._store(
                row,
                [k[b, :, lo:hi].clone() for k, _ in layers],
                [v[b, :, lo:hi].clone() for _, v in layers],
                full,
            )


class PrefixCachedScorer:
    """What a scorer built on a :class:`PrefixCache` (``self.cache``) reports: model calls, tokens run, a reset."""

    cache: PrefixCache

    @property
    def calls(self) -> int:
        return self.cache.calls

    @property
    def forward_tokens(self) -> int:
        return self.cache.forward_tokens

    def clear_cache(self) -> None:
        """Forget cached prefixes, so the next run pays for its own (fair cost accounting between runs)."""
        self.cache.clear()
