"""Sampling a token per row from next-token logits, each row from its own counter-based random stream.

A row's stream is a 63-bit seed; the noise for its token at position t is a
pure function of (seed, t) (splitmix64, vectorised over the vocabulary), so a
row samples the same tokens whatever else is in its batch, and a fork of a
row continues from a seed :func:`mix` derives from the parent's.
"""

from __future__ import annotations

import zlib

import torch

from steerable.lm.types import SamplingParams

_MASK64 = (1 << 64) - 1


def mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 over their sum chain)."""
    z = 0
    for v in values:
        z = (z * 0x9E3779B97F4A7C15 + v + 0x632BE59BD9B4E019) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
    return z >> 1


def derive_seed(seed: int, *keys: int | str) -> int:
    """The seed of a sub-stream of a run seeded with ``seed`` (a strategy's round or sweep): :func:`mix` over
    ``seed`` and ``keys`` (a string by its CRC-32), so two sub-streams never share a seed the way ``seed + 7919 k``
    and another run's ``seed'`` can."""
    return mix(seed, *(zlib.crc32(k.encode()) if isinstance(k, str) else k for k in keys))


def item_seed(seed: int, i: int) -> int:
    """The seed of item ``i`` of a run seeded with ``seed`` (a scaling item, an evaluation episode).

    Kept as the plain ``seed * 1_000_003 + i`` rather than :func:`derive_seed`: results directories resume by these
    seeds and README's figures were measured with them, so changing the map would silently change both. Distinct
    for every (seed, i) with 0 <= i < 1,000,003."""
    return seed * 1_000_003 + i


def _srl(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _M1, _M2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def uniforms(streams: torch.Tensor, vocab: int) -> torch.Tensor:
    """Counter-based uniforms ``[rows, vocab]`` in (0, 1) from ``streams`` ``[rows, 2]`` = (row seed, position).

    One generator call per row and token cost more than the model at batch 64; this draws the whole
    block at once, and a row's numbers still depend only on its own seed and position.
    """
    z = streams[:, :1] * _GOLDEN + streams[:, 1:2] * _M1 + torch.arange(vocab, dtype=torch.long) * _M2
    z = z + _GOLDEN
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    z = z ^ _srl(z, 31)
    return (_srl(z, 11).double() + 0.5) / float(1 << 53)


def sample(
    logits: torch.Tensor, params: SamplingParams, streams: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(token ids, logprobs)`` for a ``[rows, vocab]`` block; logprobs under the unscaled model.

    With ``streams`` (row seed, position) each row draws by Gumbel-max from its own counter-based
    noise; without, from torch's global generator.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    if params.greedy:
        chosen = logits.argmax(dim=-1)
    else:
        scores = logits.float() / params.temperature
        if params.top_k:
            kth = torch.topk(scores, min(params.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if params.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
            cum = torch.softmax(sorted_scores, dim=-1).cumsum(-1)
            drop = cum - torch.softmax(sorted_scores, dim=-1) >= params.top_p  # keep the token that crosses top_p
            sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
            scores = torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)
        if streams is None:
            chosen = torch.multinomial(torch.softmax(scores, dim=-1).cpu(), 1).squeeze(-1).to(logits.device)
        else:
            gumbel = -torch.log(-torch.log(uniforms(streams, scores.shape[-1])))
            chosen = (scores.cpu().double() + gumbel).argmax(dim=-1).to(logits.device)
    return chosen.cpu(), logp.gather(-1, chosen.unsqueeze(-1)).squeeze(-1).cpu()


def top_logprobs(logp: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
    """The ``k`` most likely tokens of each row of ``logp`` ``[rows, vocab]``, as (token id, logprob), best first."""
    if k <= 0:
        return [[] for _ in range(logp.shape[0])]
    values, ids = torch.topk(logp.float(), min(k, logp.shape[-1]), dim=-1)
    return [list(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
