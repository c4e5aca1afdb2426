"""Any Hugging Face model as a scorer: a causal LM used as a PRM, or a sequence classifier as an ORM.

PRM convention (Math-Shepherd / Qwen-PRM style, configurable): the solution is
split into steps at ``delimiter``; ``step_tag`` is written after every step;
at each tag position the model's next-token distribution restricted to
``good_token`` and ``bad_token`` gives P(good step). Step scores are
aggregated by ``last``, ``min``, ``product`` or ``mean`` (search-and-learn's
choices).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from steerable.errors import ConfigError
from steerable.lm.padding import left_padded
from steerable.lm.prefix_cache import PrefixCache, PrefixCachedScorer

Aggregation = Literal["last", "min", "product", "mean"]


def aggregate(step_scores: Sequence[float], how: Aggregation = "last") -> float:
    """One score from per-step scores; an empty solution scores 0.5 (no evidence either way)."""
    if not step_scores:
        return 0.5
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "product":
        return float(math.prod(step_scores))
    if how == "mean":
        return float(sum(step_scores) / len(step_scores))
    raise ConfigError(f"unknown aggregation {how!r}: use last, min, product or mean")


class CausalLMPRM(PrefixCachedScorer):
    range = (0.0, 1.0)

    def __init__(
        self,
        model,
        tokenizer,
        step_tag: str = " ки",
        good_token: str = "+",
        bad_token: str = "-",
        delimiter: str = "\n\n",
        aggregation: Aggregation = "last",
        batch_size: int = 16,
        cache_mb: float = 256.0,
    ):
        aggregate([1.0], aggregation)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.step_tag, self.delimiter, self.aggregation, self.batch_size = step_tag, delimiter, aggregation, batch_size
        self.tag_ids = tokenizer(step_tag, add_special_tokens=False)["input_ids"]
        good = tokenizer(good_token, add_special_tokens=False)["input_ids"]
        bad = tokenizer(bad_token, add_special_tokens=False)["input_ids"]
        if not self.tag_ids or len(good) != 1 or len(bad) != 1:
            raise ConfigError(
                f"step tag {step_tag!r} must encode to tokens and good/bad tokens "
                f"({good_token!r}, {bad_token!r}) to one token each in this tokenizer"
            )
        self.good, self.bad = good[0], bad[0]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        pair = [self.good, self.bad]
        # each partial is its parent plus a step: only the new step runs through the model
        self.cache = PrefixCache(model, lambda logits: logits[..., pair], cache_mb, batch_size, pad)

    def step_scores(self, prompt: str, partial: str) -> list[float]:
        return self._score_many([prompt], [partial])[0]

    def score(self, prompts: Sequence[str], partials: Sequence[str]) -> list[float]:
        return [aggregate(s, self.aggregation) for s in self._score_many(prompts, partials)]

    @torch.inference_mode()
    def _score_many(self, prompts: Sequence[str], partials: Sequence[str]) -> list[list[float]]:
        rows, tag_positions = [], []
        for prompt, partial in zip(prompts, partials, strict=True):
            ids = self.tokenizer(prompt)["input_ids"]
            positions = []
            for step in (s for s in partial.split(self.delimiter) if s.strip()):
                ids = ids + self.tokenizer(step, add_special_tokens=False)["input_ids"] + self.tag_ids
                positions.append(len(ids) - 1)  # the last tag token predicts good/bad
            rows.append(ids)
            tag_positions.append(positions)
        outs = self.cache(rows)
        return [torch.softmax(o[p], -1)[:, 0].tolist() for o, p in zip(outs, tag_positions, strict=True)]


class SequenceClassifierORM:
    """Outcome reward model: a sequence classifier; one label -> sigmoid, two -> P(label 1)."""

    range = (0.0, 1.0)

    def __init__(self, model, tokenizer, batch_size: int = 16):
        if model.config.num_labels not in (1, 2):
            raise ConfigError(f"an ORM needs 1 or 2 labels (this model has {model.config.num_labels})")
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.device = next(model.parameters()).device
        self.calls = 0
        self.forward_tokens = 0

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], partials: Sequence[str]) -> list[float]:
        texts = [p + s for p, s in zip(prompts, partials, strict=True)]
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            # left-padded with explicit positions; the classifier reads the last column, a real token in every row
            enc = left_padded(self.tokenizer, texts[i : i + self.batch_size], self.device)
            logits = self.model(**enc).logits.float()
            self.calls += 1
            self.forward_tokens += int(enc["attention_mask"].sum())
            probs = torch.sigmoid(logits[:, 0]) if logits.shape[-1] == 1 else torch.softmax(logits, -1)[:, 1]
            out.extend(probs.tolist())
        return out
