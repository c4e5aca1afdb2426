"""Sampling a token per row from next-token logits, each row from its own counter-based random stream.

A row's stream is a 63-bit seed; the noise for its token at position t is a
pure function of (seed, t) (:func:`steerable.streams.uniforms`, vectorised over
the vocabulary), so a row samples the same tokens whatever else is in its
batch, and a fork of a row continues from a seed :func:`steerable.streams.mix`
derives from the parent's.
"""

from __future__ import annotations

import torch

from steerable.lm.types import SamplingParams
from steerable.streams import uniforms


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
