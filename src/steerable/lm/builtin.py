"""The built-in model: a tiny Llama trained on the built-in world, shipped in the package."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from steerable.lm.loading import BUILTIN_DIR, BUILTIN_PRM_DIR, builtin_path, load_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["BUILTIN_DIR", "BUILTIN_PRM_DIR", "info", "load", "model_config", "moe_config", "path"]
path = builtin_path


def model_config(vocab_size: int, pad_token_id: int, bos_token_id: int, eos_token_id: int):
    """The architecture of the built-in model (about 1.8M parameters)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=6,
        num_key_value_heads=6,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )


def moe_config(vocab_size: int, pad_token_id: int, bos_token_id: int, eos_token_id: int):
    """The built-in mixture of experts (``builtin:moe``, about 2M parameters): a Qwen3-MoE of 4 layers, every MLP
    8 experts of width 128 with 2 routed per token and no shared expert, so that routing carries the function
    (what RICE steers); the router's load-balancing loss at 0.01."""
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        moe_intermediate_size=128,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=32,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        output_router_logits=False,
        router_aux_loss_coef=0.01,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )


def info() -> dict:
    """The training record written next to the weights by ``steerable builtin train``."""
    rec = path() / "training.json"
    return json.loads(rec.read_text()) if rec.exists() else {}


def load(device: str = "cpu", dtype: str = "float32") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` of the built-in model, ready for inference."""
    return load_model(str(path()), device=device, dtype=dtype)
