"""A batch of partial sequences on one generator, with their KV cache: rows are forked, selected and joined.

Rows of a batch grow at different speeds. A row that is idle while others run
gets a padding slot (attention mask 0) in the cache; positions come from the
count of real tokens per row, so holes change nothing the model computes, and
:func:`compact` drops slots that are padding in every row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from steerable.errors import InputError
from steerable.lm import cache as kv
from steerable.streams import forks, mix


class Sequences:
    """A batch of partial sequences on one generator, with their KV cache.

    ``token_ids[r]`` is row r's whole sequence (prompt included, no padding);
    ``prompt_lens[r]`` how much of it was the prompt. The cache holds every
    token of a row except its ``pending`` ones.
    """

    def __init__(self, token_ids: list[list[int]], prompt_lens: list[int], prompt_index: list[int]):
        self.token_ids = token_ids
        self.prompt_lens = prompt_lens
        self.prompt_index = prompt_index  # which input prompt each row came from
        self.pending: list[list[int]] = [list(t) for t in token_ids]
        self.finished = [False] * len(token_ids)
        self.cache = None  # a transformers DynamicCache once something has been fed
        self.mask = torch.zeros((len(token_ids), 0), dtype=torch.long)  # [batch, cache_len]
        self.lengths = torch.zeros(len(token_ids), dtype=torch.long)  # real tokens in the cache per row
        self.next_logits: torch.Tensor | None = None  # [batch, vocab] once nothing is pending
        # one random stream per row once a seed is given, so a row's samples do not depend on its batch-mates
        self.rngs: list[int] | None = None

    def seed(self, seed: int) -> None:
        """Give every row its own random stream derived from ``seed``."""
        self.rngs = [mix(seed, r) for r in range(len(self))]

    def __len__(self) -> int:
        return len(self.token_ids)

    def generated(self, row: int) -> list[int]:
        return self.token_ids[row][self.prompt_lens[row] :]

    def select(self, rows: Sequence[int]) -> Sequences:
        """A new batch made of ``rows`` (repeats fork a row); this batch stays valid."""
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        if len(idx) == 0:
            raise InputError("select needs at least one row")
        if int(idx.min()) < 0 or int(idx.max()) >= len(self):
            raise InputError(f"row index out of range for a batch of {len(self)}: {list(rows)}")
        out = Sequences.__new__(Sequences)
        out.token_ids = [list(self.token_ids[r]) for r in rows]
        out.prompt_lens = [self.prompt_lens[r] for r in rows]
        out.prompt_index = [self.prompt_index[r] for r in rows]
        out.pending = [list(self.pending[r]) for r in rows]
        out.finished = [self.finished[r] for r in rows]
        out.cache = kv.select(self.cache, idx.to(self.mask.device)) if self.cache is not None else None
        out.mask = self.mask[idx.to(self.mask.device)]
        out.lengths = self.lengths[idx.to(self.lengths.device)]
        out.next_logits = self.next_logits[idx.to(self.next_logits.device)] if self.next_logits is not None else None
        out.rngs = None
        if self.rngs is not None:  # a row's first copy continues its stream; further copies (forks) branch off it
            out.rngs = forks(self.rngs, rows, [len(t) for t in self.token_ids], mix)
        return out

    def fork(self, row: int, n: int) -> Sequences:
        """``n`` copies of one row."""
        return self.select([row] * n)

    @staticmethod
    def concat(batches: Sequence[Sequences]) -> Sequences:
        """One batch holding every row of ``batches`` in order; the inputs stay valid."""
        if not batches:
            raise InputError("concat needs at least one batch")
        if len(batches) == 1:
            return batches[0].select(range(len(batches[0])))
        width = max(b.mask.shape[1] for b in batches)
        out = Sequences.__new__(Sequences)
        out.token_ids = [list(t) for b in batches for t in b.token_ids]
        out.prompt_lens = [p for b in batches for p in b.prompt_lens]
        out.prompt_index = [p for b in batches for p in b.prompt_index]
        out.pending = [list(p) for b in batches for p in b.pending]
        out.finished = [f for b in batches for f in b.finished]
        # caches are left-padded to a common length: positions come from `lengths`, so slots are free to move
        out.mask = torch.cat([torch.nn.functional.pad(b.mask, (width - b.mask.shape[1], 0)) for b in batches])
        out.lengths = torch.cat([b.lengths for b in batches])
        caches = [b.cache for b in batches]
        if all(c is None for c in caches):
            out.cache = None
        else:
            if any(c is None for c in caches):
                raise InputError("cannot concat a batch that has not started with one that has: step both first")
            out.cache = kv.concat(caches, [len(b) for b in batches], width)
        rngs = [b.rngs for b in batches]
        out.rngs = [g for b in rngs for g in b] if all(x is not None for x in rngs) else None
        logits = [b.next_logits for b in batches]
        out.next_logits = torch.cat(logits) if all(x is not None for x in logits) else None
        if out.next_logits is None and any(x is not None for x in logits):
            raise InputError("cannot concat batches whose logits were taken with ones whose were not")
        return out


def compact(seqs: Sequences) -> None:
    """Drop cache slots that are padding in every row (they only cost memory and time)."""
    if seqs.cache is None or seqs.mask.shape[1] == 0:
        return
    keep = seqs.mask.any(dim=0)
    if bool(keep.all()):
        return
    cols = keep.nonzero().squeeze(-1)
    seqs.mask = seqs.mask[:, cols]
    seqs.cache = kv.keep_slots(seqs.cache, cols)
