"""GrAInS ("GrAInS: Gradient-based Attribution for Inference-Time Steering of LLMs and VLMs").

For each prompt ``x``, contrastive integrated gradients (zero baseline,
``steps`` points) of ``f = log p(y⁺|x) − log p(y⁻|x)`` with respect to the
prompt's input embeddings give each prompt token a score (attribution summed
over the embedding dimension). The ``k`` most positive tokens (evidence for
``y⁺``) and, separately, the ``k`` most negative are replaced by the pad (or
unk) token; the change of the last token's layer inputs, original minus
masked, is ``δ⁺`` and ``δ⁻``. Over the prompts, ``v⁺`` and ``v⁻`` are the mean
(or first principal component) of the ``δ``s per layer, and the steering
vector is ``v = v⁺ − v⁻``. It is applied with norm preservation:
``h' = h + λ v`` rescaled to ``‖h‖`` (``Add(..., norm_preserve=True)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from steerable.errors import ConfigError, InputError
from steerable.steer.extract import activations


def _mask_id(tokenizer) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.unk_token_id):
        if tid is not None:
            return tid
    raise ConfigError("GrAInS masks tokens with the pad or unk token; this tokenizer has neither")


def attributions(model: nn.Module, tokenizer, prompt: str, positive: str, negative: str, steps: int = 20):
    """Integrated-gradient score of every prompt token for ``log p(positive) - log p(negative)``: ``[prompt_len]``."""
    dev = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(dev)  # [1, T]
    emb = model.get_input_embeddings()
    base = emb(ids).detach()  # [1, T, d]
    alphas = torch.arange(1, steps + 1, device=dev, dtype=base.dtype) / steps  # right Riemann sum, zero baseline

    def logp(cont: str) -> torch.Tensor:
        y = tokenizer(cont, add_special_tokens=False, return_tensors="pt")["input_ids"].to(dev)  # [1, Y]
        if y.shape[1] == 0:
            raise InputError("GrAInS needs non-empty positive and negative continuations")
        scaled = (alphas[:, None, None] * base).requires_grad_(True)  # [steps, T, d]
        full = torch.cat([scaled, emb(y).detach().expand(steps, -1, -1)], dim=1)
        logits = model(inputs_embeds=full).logits.float()  # [steps, T+Y, vocab]
        lp = torch.log_softmax(logits[:, ids.shape[1] - 1 : -1], -1)  # predictions of the continuation
        total = lp.gather(-1, y.expand(steps, -1)[..., None]).sum()
        (grad,) = torch.autograd.grad(total, scaled)
        return grad  # [steps, T, d]

    with torch.enable_grad():
        grads = logp(positive) - logp(negative)
    return (base[0] * grads.mean(0)).sum(-1).detach()  # [T]


def grains_vector(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    positive: str,
    negative: str,
    k: int = 10,
    steps: int = 20,
    pca: bool = False,
    layers_path: str | None = None,
    on_prompt: Callable[[], None] | None = None,
) -> torch.Tensor:
    """``v = v⁺ − v⁻`` for every layer: ``[layers, hidden]``."""
    if not prompts:
        raise InputError("GrAInS needs prompts to attribute")
    if k < 1 or steps < 1:
        raise ConfigError(f"k and steps must be >= 1 (got {k}, {steps})")
    mask = _mask_id(tokenizer)
    originals, masked_pos, masked_neg = [], [], []
    special = set(tokenizer.all_special_ids)
    for p in prompts:
        scores = attributions(model, tokenizer, p, positive, negative, steps)
        ids = tokenizer(p)["input_ids"]
        # never mask special tokens, nor the last token (its hidden state is what we read)
        allowed = [i for i, t in enumerate(ids[:-1]) if t not in special]
        order = sorted(allowed, key=lambda i: float(scores[i]))
        top_pos = [i for i in order[::-1][:k] if scores[i] > 0]
        top_neg = [i for i in order[:k] if scores[i] < 0]
        originals.append(ids)
        masked_pos.append([mask if i in top_pos else t for i, t in enumerate(ids)])
        masked_neg.append([mask if i in top_neg else t for i, t in enumerate(ids)])
        if on_prompt:
            on_prompt()
    # masked prompts are read as token ids (decoding and re-encoding could merge tokens differently)
    last = lambda rows: activations(model, tokenizer, rows, (-1,), layers_path=layers_path)[0]  # noqa: E731
    h = last(originals)  # [layers, n, hidden]
    d_pos = h - last(masked_pos)
    d_neg = h - last(masked_neg)

    def summary(d: torch.Tensor) -> torch.Tensor:
        if not pca:
            return d.mean(1)
        mean = d.mean(1, keepdim=True)
        _, _, vh = torch.linalg.svd(d - mean, full_matrices=False)
        pc = vh[:, 0]  # [layers, hidden]
        sign = torch.sign((pc * mean[:, 0]).sum(-1, keepdim=True))
        return pc * torch.where(sign == 0, torch.ones_like(sign), sign) * mean[:, 0].norm(dim=-1, keepdim=True)

    return summary(d_pos) - summary(d_neg)
