"""Row and column surgery on a transformers ``DynamicCache``.

Keys and values of every layer are ``[batch, heads, cache_len, head_dim]``.
Rows are selected (and so forked) by indexing; caches of different lengths are
concatenated by left-padding with empty slots, which the attention mask hides.
Only full-attention dynamic layers are supported: a sliding-window or
recurrent cache cannot be re-indexed this way, and we say so.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from steerable.errors import ConfigError


def _cache_kwarg() -> str:
    """transformers >= 5.2x names the cache argument ``cache``; older releases ``past_key_values``."""
    import inspect

    from transformers import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


CACHE_KWARG = _cache_kwarg()


def output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _layers(cache) -> list:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise ConfigError(f"unsupported KV cache {type(cache).__name__}: steerable needs a transformers DynamicCache")
    for layer in layers:
        if getattr(layer, "is_sliding", False) or not hasattr(layer, "keys"):
            raise ConfigError(
                f"unsupported cache layer {type(layer).__name__}: sliding-window and recurrent caches cannot be "
                "forked; load the model with sliding_window=None or use a full-attention model"
            )
    return layers


def _with_layers(cache, tensors: list[tuple[torch.Tensor, torch.Tensor] | None]):
    """A shallow copy of ``cache`` whose layers hold the given (keys, values)."""
    out = copy.copy(cache)
    out.layers = []
    for layer, kv in zip(_layers(cache), tensors, strict=True):
        new = copy.copy(layer)
        if kv is not None:
            new.keys, new.values = kv
        out.layers.append(new)
    return out


def _initialised(layer) -> bool:
    return getattr(layer, "is_initialized", True) and layer.keys is not None and layer.keys.numel() > 0


def select(cache, idx: torch.Tensor):
    """A new cache holding rows ``idx`` (repeats allowed) of ``cache``; ``cache`` is unchanged."""
    return _with_layers(
        cache,
        [(layer.keys[idx], layer.values[idx]) if _initialised(layer) else None for layer in _layers(cache)],
    )


def concat(caches: list, rows: list[int], width: int):
    """Caches stacked along the batch, each left-padded to ``width`` slots."""
    per_layer = []
    for i, layer in enumerate(_layers(caches[0])):
        if not _initialised(layer):
            per_layer.append(None)
            continue
        keys, values = [], []
        for c in caches:
            lay = _layers(c)[i]
            pad = width - lay.keys.shape[-2]
            keys.append(F.pad(lay.keys, (0, 0, pad, 0)))
            values.append(F.pad(lay.values, (0, 0, pad, 0)))
        per_layer.append((torch.cat(keys), torch.cat(values)))
    return _with_layers(caches[0], per_layer)


def keep_slots(cache, cols: torch.Tensor):
    """A new cache holding only the slots (positions) ``cols`` of every row; ``cache`` is unchanged."""
    per_layer = []
    for layer in _layers(cache):
        if not _initialised(layer):
            per_layer.append(None)
            continue
        c = cols.to(layer.keys.device)
        per_layer.append((layer.keys[:, :, c], layer.values[:, :, c]))
    return _with_layers(cache, per_layer)
