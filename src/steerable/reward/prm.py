"""Process reward models that score partial solutions in [0, 1].

:class:`TokenClassifierPRM` is any ``transformers`` token-classification model
with one label whose logit at the last token of ``prompt + partial solution``
says whether the solution is still on a correct path (the built-in PRM is one).
The built-in world's exact checker as a PRM is
:class:`steerable.tasks.builtin.verifier.OraclePRM`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from steerable.errors import ModelLoadError
from steerable.lm.prefix_cache import PrefixCache, PrefixCachedScorer


class TokenClassifierPRM(PrefixCachedScorer):
    """Score = sigmoid(logit) at the last token of ``prompt + partial``."""

    range = (0.0, 1.0)

    def __init__(self, model, tokenizer, batch_size: int = 64, cache_mb: float = 256.0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # a partial is scored after every step and each is its parent plus a step: reuse the parent's KV cache
        self.cache = PrefixCache(model, lambda logits: logits[..., :1], cache_mb, batch_size, pad)

    @classmethod
    def from_pretrained(cls, path: str = "builtin", device: str = "cpu") -> TokenClassifierPRM:
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        import steerable.reward.surprise_prm  # noqa: F401  (registers the built-in PRM's architecture)
        from steerable.lm.loading import resolve_device

        if path == "builtin":
            from steerable.lm.builtin import BUILTIN_PRM_DIR

            path = str(BUILTIN_PRM_DIR)
        if not (Path(path) / "config.json").exists():
            raise ModelLoadError(f"no PRM at {path!r}: run `steerable builtin train-prm --out DIR` or pass a PRM dir")
        model = AutoModelForTokenClassification.from_pretrained(path).to(resolve_device(device))
        return cls(model, AutoTokenizer.from_pretrained(path))

    @property
    def info(self) -> dict:
        rec = Path(getattr(self.model.config, "_name_or_path", "")) / "prm.json"
        return json.loads(rec.read_text()) if rec.exists() else {}

    def score(self, prompts: Sequence[str], partials: Sequence[str]) -> list[float]:
        """One score per (prompt, partial solution) pair."""
        texts = [p + s for p, s in zip(prompts, partials, strict=True)]
        if not texts:
            return []
        rows = self.tokenizer(texts)["input_ids"]
        return [float(torch.sigmoid(out[-1, 0])) for out in self.cache(rows)]
