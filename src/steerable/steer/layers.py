"""Find the decoder layers (and their attention and MLP blocks) of any Hugging Face causal LM.

Known families keep their layers at a few paths (``model.layers`` for Llama,
Qwen2, Mistral, Gemma, Phi and the MoE families; ``transformer.h`` for GPT-2;
``gpt_neox.layers``). Anything else is found as the module list whose length
is the config's layer count; ``path`` overrides the search for a model where
that guess is wrong.
"""

from __future__ import annotations

from torch import nn

from steerable.errors import ConfigError

KNOWN_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "transformer.layers")
ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")
MLP_NAMES = ("mlp", "feed_forward", "block_sparse_moe", "ffn")


def _get(model: nn.Module, path: str) -> nn.Module | None:
    obj = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def n_layers(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(getattr(cfg, key, None), int):
            return getattr(cfg, key)
    return None


def decoder_layers(model: nn.Module, path: str | None = None) -> nn.ModuleList:
    """The model's decoder layers, in order."""
    if path is not None:
        found = _get(model, path)
        if not isinstance(found, nn.ModuleList):
            raise ConfigError(
                f"{type(model).__name__} has no module list at {path!r}: pass the dotted path of its layers"
            )
        return found
    for known in KNOWN_PATHS:
        found = _get(model, known)
        if isinstance(found, nn.ModuleList) and len(found):
            return found
    want = n_layers(model)
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == want]
    if want and len(lists) >= 1:
        return lists[0]
    raise ConfigError(
        f"cannot find the decoder layers of {type(model).__name__}: pass layers_path='dotted.path' "
        "(e.g. 'model.layers') naming its list of decoder layers"
    )


def _child(layer: nn.Module, names: tuple[str, ...], what: str) -> nn.Module:
    for name in names:
        child = getattr(layer, name, None)
        if isinstance(child, nn.Module):
            return child
    raise ConfigError(f"cannot find the {what} block of {type(layer).__name__} (looked for {', '.join(names)})")


def attention(layer: nn.Module) -> nn.Module:
    return _child(layer, ATTENTION_NAMES, "attention")


def mlp(layer: nn.Module) -> nn.Module:
    return _child(layer, MLP_NAMES, "MLP")


def hidden_size(model: nn.Module) -> int:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for key in ("hidden_size", "n_embd", "d_model"):
        if isinstance(getattr(cfg, key, None), int):
            return getattr(cfg, key)
    raise ConfigError(f"cannot tell the hidden size of {type(model).__name__} from its config")
