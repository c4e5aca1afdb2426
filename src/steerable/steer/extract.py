"""Steering vectors from contrastive prompt sets: residual-stream activations, then a direction per layer.

:func:`activations` runs prompts in left-padded batches and records the input
of every decoder layer at chosen token positions (counted from the end of the
prompt) in one pass. From positive and negative activations:

- :func:`mean_difference`: ``mean(pos) - mean(neg)`` (CAA, Rimsky et al.;
  Arditi et al.'s refusal direction candidates),
- :func:`pca_direction`: first principal component of the pair differences
  ``pos_i - neg_i`` (repeng's ``pca_diff``), signed to agree with the mean
  difference and scaled to its projection,
- :func:`probe_direction`: the weight vector of an L2-regularised logistic
  probe separating pos from neg, scaled like the PCA direction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from steerable.errors import InputError
from steerable.lm.padding import left_padded
from steerable.steer.layers import decoder_layers


@torch.no_grad()  # not inference_mode: probes train on what this returns
def activations(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    positions: Sequence[int] = (-1,),
    batch_size: int = 32,
    layers_path: str | None = None,
) -> torch.Tensor:
    """Layer inputs at ``positions`` (negative, from the prompt's end): ``[positions, layers, prompts, hidden]``.

    ``prompts`` are texts or token id rows.
    """
    if not prompts:
        raise InputError("no prompts to read activations from: pass at least one")
    if any(p >= 0 for p in positions):
        raise InputError(f"positions count from the end of the prompt and must be negative (got {list(positions)})")
    layers = decoder_layers(model, layers_path)
    dev = next(model.parameters()).device
    cols = torch.tensor(list(positions), device=dev)
    caught: list[torch.Tensor | None] = [None] * len(layers)

    def catch(i: int):
        def hook(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]  # [batch, time, hidden]
            caught[i] = h[:, cols].float()

        return hook

    handles = [layer.register_forward_pre_hook(catch(i), with_kwargs=True) for i, layer in enumerate(layers)]
    out = []
    try:
        for start in range(0, len(prompts), batch_size):
            enc = left_padded(tokenizer, prompts[start : start + batch_size], dev)
            if int(enc["attention_mask"].sum(1).min()) < -min(positions):
                raise InputError(f"a prompt is shorter than position {min(positions)}: use positions nearer the end")
            model(**enc)
            out.append(torch.stack(caught, dim=0).permute(2, 0, 1, 3))  # [positions, layers, batch, hidden]
    finally:
        for h in handles:
            h.remove()
    return torch.cat(out, dim=2)


def _pair_check(pos: torch.Tensor, neg: torch.Tensor, paired: bool) -> None:
    if pos.shape[:-2] != neg.shape[:-2] or pos.shape[-1] != neg.shape[-1]:
        raise InputError(f"positive {tuple(pos.shape)} and negative {tuple(neg.shape)} activations do not line up")
    if paired and pos.shape != neg.shape:
        raise InputError(f"pairs need as many positives as negatives (got {pos.shape[-2]} and {neg.shape[-2]})")


def mean_difference(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``[..., n, hidden]`` sets -> ``[..., hidden]``."""
    _pair_check(pos, neg, paired=False)
    return pos.mean(-2) - neg.mean(-2)


def _scale_like_mean(direction: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Unit ``direction`` signed and scaled so it moves as far along itself as the mean difference."""
    md = mean_difference(pos, neg)
    proj = (md * direction).sum(-1, keepdim=True)
    return direction * proj.sign().where(proj != 0, torch.ones_like(proj)) * proj.abs().clamp_min(1e-6)


def pca_direction(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """First principal component of pair differences (rows of ``pos`` and ``neg`` are pairs)."""
    _pair_check(pos, neg, paired=True)
    diff = pos - neg  # [..., n, hidden]
    centred = diff - diff.mean(-2, keepdim=True)
    # the top right-singular vector; with one pair (or identical differences) fall back to the mean difference
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    unit = vh[..., 0, :]
    flat = s[..., 0] <= 1e-6
    if bool(flat.any()):
        md = diff.mean(-2)
        unit = torch.where(flat[..., None], md / md.norm(dim=-1, keepdim=True).clamp_min(1e-12), unit)
    return _scale_like_mean(unit, pos, neg)


def probe_direction(pos: torch.Tensor, neg: torch.Tensor, l2: float = 1e-2, steps: int = 200) -> torch.Tensor:
    """Weights of a logistic probe pos-vs-neg per leading index, on standardised features, as a direction."""
    _pair_check(pos, neg, paired=False)
    lead = pos.shape[:-2]
    x = torch.cat([pos, neg], dim=-2).reshape(-1, pos.shape[-2] + neg.shape[-2], pos.shape[-1]).double()
    y = torch.cat([torch.ones(pos.shape[-2]), torch.zeros(neg.shape[-2])]).double()
    units = []
    for xs in x:  # one probe per layer/position
        mu, sd = xs.mean(0), xs.std(0).clamp_min(1e-6)
        z = (xs - mu) / sd
        w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

        def closure(z=z, w=w, b=b, opt=opt):
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w * w).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        direction = w.detach() / sd  # back to the raw feature space
        units.append(direction / direction.norm().clamp_min(1e-12))
    unit = torch.stack(units).reshape(*lead, pos.shape[-1]).to(pos.dtype)
    return _scale_like_mean(unit, pos, neg)


METHODS = {"mean": mean_difference, "pca": pca_direction, "probe": probe_direction}
