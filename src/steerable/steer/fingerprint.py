"""What a steering artifact records of the model it was made for, and the check that refuses another model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from steerable.errors import IncompatibleArtifactError
from steerable.steer.layers import decoder_layers, hidden_size


def fingerprint(model, tokenizer, layers_path: str | None = None) -> dict:
    """Architecture, hidden size, layer count and a hash of the tokenizer's vocabulary."""
    cfg = model.config
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode()
    return {
        "architecture": (getattr(cfg, "architectures", None) or [type(model).__name__])[0],
        "hidden_size": hidden_size(model),
        "n_layers": len(decoder_layers(model, layers_path)),
        "tokenizer": hashlib.sha256(vocab).hexdigest()[:16],
    }


def check_fingerprint(
    recorded: dict, model, tokenizer, layers_path: str | None = None, where: str | Path = "artifact"
) -> None:
    """Refuse an artifact whose recorded fingerprint is not ``model``'s, naming what differs."""
    mine = fingerprint(model, tokenizer, layers_path)
    diff = [f"{k} {recorded.get(k)!r} vs {mine[k]!r}" for k in mine if recorded.get(k) != mine[k]]
    if diff:
        raise IncompatibleArtifactError(
            f"{where} was made for another model ({'; '.join(diff)}): extract it again on this model"
        )
