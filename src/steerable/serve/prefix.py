"""The engine's prefix cache across requests (what vLLM calls automatic prefix caching).

A tool loop sends its whole conversation again every turn, and chat clients
resend their history: without a cache every turn prefills everything again.
When a row finishes, the KV cache of its tokens (prompt and generated, all
but the last sampled token, which was never fed) is kept; a later prompt that
starts with the same token ids starts from those keys and values and
prefills only the rest. The rows live in a
:class:`~steerable.lm.prefix_cache.PrefixStore` (exact by ids, least recently
used dropped past ``max_mb``, indexed every ``block`` tokens so a prompt that
shares only the beginning of a stored row still reuses that part).

What changes the KV besides the ids is the steering, so rows are kept apart
by a *space*: the artifact's name and strength (no steering is a space of its
own). Steering that depends on where a token sits (a prompt-only or
generated-only scope: a stored generated token becomes a prompt token of the
next request) and controllers (which decide from the whole prompt) get no
space and are never cached.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch
import torch.nn.functional as F

from steerable.lm import cache as kv
from steerable.lm.prefix_cache import PrefixStore, kv_bytes
from steerable.lm.sequences import Sequences

#: tokens between index points of a stored row (vLLM's default block size)
BLOCK = 16


def cache_space(steering: str | None, strength: float | None, artifact: Any) -> Hashable | None:
    """The space of a request's rows, or None where its KV cannot be reused (see the module's note)."""
    if steering is None:
        return ("none",)
    from steerable.steer.controller import Controller

    if isinstance(artifact, Controller) or getattr(artifact, "scope", None) != "all":
        return None
    return ("steer", steering, strength)


class EnginePrefixCache:
    """Stored rows of KV for one model: :meth:`start` seeds new prompts from them, :meth:`keep` stores a row."""

    def __init__(self, model, max_mb: float, block: int = BLOCK):
        self.model = model
        self.store = PrefixStore(int(max_mb * 2**20), block)
        self._spaces: dict[Hashable, int] = {}  # space -> a negative id that starts its rows (never a token)
        self.reused_tokens = 0  # prompt tokens taken from the cache
        self.prefilled_tokens = 0  # prompt tokens that were not

    @property
    def enabled(self) -> bool:
        return self.store.max_bytes > 0

    def _key(self, space: Hashable, ids: list[int]) -> list[int]:
        sid = self._spaces.setdefault(space, -1 - len(self._spaces))
        return [sid, *ids]

    def start(
        self, ids: list[list[int]], prompt_index: list[int], space: Hashable | None
    ) -> tuple[Sequences, list[int]]:
        """New rows for prompts ``ids`` with their cached prefixes already in the KV cache (at least each
        prompt's last token stays pending, to be fed and sampled), and how many tokens each took from it."""
        seqs = Sequences(ids, [len(x) for x in ids], prompt_index)
        hits: list[tuple[Any, int]] = []
        for x in ids:
            found = self.store.longest(self._key(space, x), whole=False) if space is not None and self.enabled else None
            n = min(found[1] - 1, len(x) - 1) if found is not None else 0  # the space id is no token
            hits.append((found[0].data if n > 0 else None, max(n, 0)))
        counts = [n for _, n in hits]
        self.reused_tokens += sum(counts)
        self.prefilled_tokens += sum(len(x) for x in ids) - sum(counts)
        width = max(counts)
        if width == 0:
            return seqs, counts
        ref = next(data for data, n in hits if n > 0)
        cache = kv.new_cache(self.model)
        for layer, (k0, v0) in enumerate(ref):
            ks, vs = [], []
            for data, n in hits:
                if n == 0:
                    ks.append(k0.new_zeros((k0.shape[0], width, k0.shape[-1])))
                    vs.append(v0.new_zeros((v0.shape[0], width, v0.shape[-1])))
                else:  # left-padded to the longest hit: positions come from the row's length, not its slot
                    ks.append(F.pad(data[layer][0][:, :n], (0, 0, width - n, 0)))
                    vs.append(F.pad(data[layer][1][:, :n], (0, 0, width - n, 0)))
            cache.update(torch.stack(ks), torch.stack(vs), layer)
        seqs.cache = cache
        seqs.mask = torch.tensor([[0] * (width - n) + [1] * n for n in counts], dtype=torch.long)
        seqs.lengths = torch.tensor(counts, dtype=torch.long)
        seqs.pending = [list(x[n:]) for x, n in zip(ids, counts, strict=True)]
        return seqs, counts

    def keep(self, seqs: Sequences, row: int, space: Hashable | None) -> None:
        """Store what row ``row`` of ``seqs`` has in the KV cache (its real slots, in order)."""
        n = int(seqs.lengths[row])
        if space is None or not self.enabled or seqs.cache is None or n < 2:
            return
        layers = kv._layers(seqs.cache)
        cols = seqs.mask[row].nonzero().squeeze(-1).to(layers[0].keys.device)
        data = [(layer.keys[row][:, cols].clone(), layer.values[row][:, cols].clone()) for layer in layers]
        nbytes = kv_bytes([k for k, _ in data], [v for _, v in data])
        self.store.put(self._key(space, seqs.token_ids[row][:n]), data, nbytes)
