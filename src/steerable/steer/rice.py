"""RICE: steering a mixture-of-experts model's thinking through two experts (Wang et al., "Two Experts Are All
You Need for Steering Thinking: Reinforcing Cognitive Effort in MoE Reasoning Models Without Additional
Training").

1. **Find the experts.** Over a corpus, at every position holding a *marker* (a token that opens a reasoning
   move: ``<think>`` or "Alternatively" in the paper, the ``check`` line here), count which experts each
   layer's router sends the token to (its top-k), and score each (layer, expert) by normalised pointwise mutual
   information with the marker::

       PMI(x, E)  = log2 p(x, E) / (p(x) p(E))
       nPMI(x, E) = PMI(x, E) / -log2 p(x, E)          in [-1, 1]; -1 where they never co-occur

   where p(x) is the share of positions that are markers, p(E) the share routed to E, p(x, E) both.
2. **Reinforce them.** The two (layer, expert) pairs of highest nPMI over the whole model (the paper's "two
   experts") have their routing weight multiplied by β on every token. Where the multiplication happens is
   not pinned down by the paper, so both are here: ``after`` the top-k choice (the weight grows only where the
   expert was already chosen; no renormalisation, or β would cancel whenever both chosen experts are
   boosted) and ``before`` it (the router's probability is multiplied before the top-k, so the expert is also
   chosen more often; the weights are renormalised exactly when the router renormalises its own).

Any Hugging Face MoE whose router returns ``(logits, weights, indices)`` (Qwen2/3-MoE, Mixtral, OLMoE,
GPT-OSS, Granite-MoE, DeepSeek-V3 in transformers 5) can be steered ``after``; ``before`` needs a router
whose choice is a top-k of its softmax (all of these but DeepSeek-V3): each router is probed once to tell
whether it renormalises.
:class:`Rice` is a steering artifact like a vector: saved with the model's fingerprint, refused on another
model, and its ``steering()`` is a context manager that leaves no hook behind.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from steerable.errors import ConfigError, IncompatibleArtifactError, InputError
from steerable.lm.padding import right_padded
from steerable.steer.fingerprint import check_fingerprint
from steerable.steer.layers import decoder_layers, mlp

Variant = Literal["after", "before"]
VARIANTS = ("after", "before")
PICKS = ("top", "random", "bottom")


def routers(model: nn.Module, layers_path: str | None = None) -> list[nn.Module | None]:
    """Each decoder layer's router (``mlp.gate`` or ``mlp.router`` with a ``[experts, hidden]`` weight and a
    ``top_k``), or None for a dense layer."""
    out: list[nn.Module | None] = []
    for layer in decoder_layers(model, layers_path):
        try:
            block = mlp(layer)
        except ConfigError:
            out.append(None)
            continue
        found = None
        for name in ("gate", "router"):
            r = getattr(block, name, None)
            w = getattr(r, "weight", None)
            if (
                isinstance(r, nn.Module)
                and isinstance(getattr(r, "top_k", None), int)
                and w is not None
                and w.ndim == 2
            ):
                found = r
                break
        out.append(found)
    if not any(r is not None for r in out):
        raise ConfigError(f"{type(model).__name__} has no mixture-of-experts router to steer: RICE needs an MoE model")
    return out


@torch.no_grad()
def expert_npmi(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    marker: str,
    offset: int = 0,
    layers_path: str | None = None,
    batch_size: int = 16,
) -> tuple[torch.Tensor, dict]:
    """``[layers, experts]`` nPMI of each expert with the marker (NaN for a dense layer), and the counts.

    A marker position is the first token of each occurrence of ``marker`` in a text, moved by ``offset``
    tokens (``-1``: the position that predicts the marker); padding is never counted.
    """
    if not marker:
        raise InputError("the marker is empty: pass the text that opens a reasoning move, e.g. --marker check")
    rs = routers(model, layers_path)
    E = max(r.weight.shape[0] for r in rs if r is not None)
    seen: dict[int, torch.Tensor] = {}  # layer -> [tokens, experts] 0/1 of the current call

    def hook(i: int):
        def record(module, args, out):
            idx = out[2].reshape(-1, out[2].shape[-1])
            seen[i] = torch.zeros(idx.shape[0], E).scatter_(1, idx.long().cpu(), 1.0)

        return record

    routed = torch.zeros(len(rs), E)
    joint = torch.zeros(len(rs), E)
    n_pos = n_mark = 0
    handles = [r.register_forward_hook(hook(i)) for i, r in enumerate(rs) if r is not None]
    try:
        device = next(model.parameters()).device
        for start in range(0, len(texts), batch_size):
            rows, marks = [], []
            for text in texts[start : start + batch_size]:
                enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
                starts = {i for i in range(len(text)) if text.startswith(marker, i)}
                m = [a in starts and b > a for a, b in enc["offset_mapping"]]
                if offset:
                    m = [0 <= j - offset < len(m) and m[j - offset] for j in range(len(m))]
                rows.append(enc["input_ids"])
                marks.append(torch.tensor(m, dtype=torch.bool))
            ids, attn = right_padded(rows)
            seen.clear()
            model(input_ids=ids.to(device), attention_mask=attn.to(device))
            real = attn.bool().reshape(-1)
            mark = torch.zeros_like(attn, dtype=torch.bool)
            for i, m in enumerate(marks):
                mark[i, : len(m)] = m
            mark = mark.reshape(-1)
            for i, onehot in seen.items():
                routed[i] += onehot[real].sum(0)
                joint[i] += onehot[mark].sum(0)
            n_pos += int(real.sum())
            n_mark += int(mark.sum())
    finally:
        for h in handles:
            h.remove()
    if n_mark == 0:
        raise InputError(f"the marker {marker!r} never occurs in the corpus: pass a corpus that holds it")
    p_x, p_e, p_xe = n_mark / n_pos, routed / n_pos, joint / n_pos
    npmi = torch.log2(p_xe / (p_x * p_e)) / -torch.log2(p_xe)
    npmi = torch.where(p_xe > 0, npmi, torch.full_like(npmi, -1.0))
    npmi[[i for i, r in enumerate(rs) if r is None]] = float("nan")
    counts = {"positions": n_pos, "markers": n_mark, "routed": routed.tolist(), "joint": joint.tolist()}
    return npmi, counts


def pick_experts(
    npmi: torch.Tensor, which: str = "top", k: int = 2, seed: int = 0, routed: torch.Tensor | None = None
) -> tuple[tuple[int, int], ...]:
    """``k`` (layer, expert) pairs: the highest nPMI (``top``, the paper's), the lowest (``bottom``) or drawn
    at random (``random``), over every layer that routes. Ties go to the expert routed more often (``routed``
    counts), so the ``bottom`` control moves experts that do work, not ones that are never chosen."""
    if which not in PICKS:
        raise ConfigError(f"unknown expert choice {which!r}: use one of {', '.join(PICKS)}")
    pairs = [(i, e) for i in range(npmi.shape[0]) for e in range(npmi.shape[1]) if not math.isnan(npmi[i, e])]
    if not 1 <= k <= len(pairs):
        raise ConfigError(f"cannot pick {k} experts: the model routes to {len(pairs)} (layer, expert) pairs")
    if which == "random":
        return tuple(sorted(random.Random(seed).sample(pairs, k)))
    use = (lambda p: float(routed[p])) if routed is not None else (lambda p: 0.0)
    sign = -1.0 if which == "top" else 1.0
    return tuple(sorted(pairs, key=lambda p: (sign * float(npmi[p]), -use(p)))[:k])


def _renormalises(router: nn.Module) -> bool:
    """Whether the router's weights are its top-k softmax probabilities renormalised to sum to 1 (Qwen3-MoE with
    ``norm_topk_prob``, Mixtral; a softmax over the top-k logits, as GPT-OSS, is the same thing) or taken as
    they are (OLMoE, Qwen2-MoE); probed once on fixed random inputs. A router that chooses another way
    (DeepSeek-V3's grouped sigmoid) is a ConfigError for the ``before`` variant."""
    g = torch.Generator().manual_seed(0)
    w = router.weight
    x = torch.randn(5, w.shape[1], generator=g).to(w.device, w.dtype)
    with torch.no_grad():
        logits, weights, idx = router.forward(x)[:3]  # the router itself, not any hook on it
    top = torch.softmax(logits.float(), -1).gather(-1, idx.long())
    for renorm, want in ((False, top), (True, top / top.sum(-1, keepdim=True))):
        if torch.allclose(weights.float(), want, atol=1e-4):
            return renorm
    raise ConfigError(
        f"{type(router).__name__} does not choose a top-k of its softmax: use RICE variant after with this model"
    )


class RouterBoost:
    """Multiply the routing weight of chosen (layer, expert) pairs by ``beta`` for the length of a ``with``
    block (or between :meth:`attach` and :meth:`detach`); the model is untouched afterwards."""

    def __init__(
        self,
        model: nn.Module,
        experts: Sequence[tuple[int, int]],
        beta: float,
        variant: Variant,
        layers_path: str | None = None,
    ):
        if variant not in VARIANTS:
            raise ConfigError(f"unknown RICE variant {variant!r}: use after or before")
        if not (math.isfinite(beta) and beta >= 0):
            raise ConfigError(f"RICE's beta must be a finite number >= 0 (got {beta})")
        self.routers = routers(model, layers_path)
        self.beta, self.variant = float(beta), variant
        self.by_layer: dict[int, list[int]] = {}
        for layer, expert in experts:
            r = self.routers[layer] if 0 <= layer < len(self.routers) else None
            if r is None or not 0 <= expert < r.weight.shape[0]:
                raise IncompatibleArtifactError(f"the model has no routed expert {expert} at layer {layer}")
            self.by_layer.setdefault(layer, []).append(expert)
        self._handles: list = []
        # whether the boost fired: per (layer, expert), tokens routed to it and tokens routed, since attach
        self.chosen: dict[tuple[int, int], list[int]] = {}

    def _count(self, layer: int, experts: list[int], idx: torch.Tensor) -> None:
        n = idx.reshape(-1, idx.shape[-1])
        for e in experts:
            c = self.chosen.setdefault((layer, e), [0, 0])
            c[0] += int((n == e).any(-1).sum())
            c[1] += n.shape[0]

    def chosen_share(self) -> dict[tuple[int, int], float]:
        """The share of tokens each boosted expert was chosen for (after the boost), since :meth:`attach`."""
        return {p: c[0] / max(1, c[1]) for p, c in self.chosen.items()}

    def _hook(self, layer: int, experts: list[int]):
        router, beta = self.routers[layer], self.beta
        if self.variant == "after":

            def after(module, args, out):
                logits, weights, idx = out[:3]
                hit = torch.isin(idx, torch.tensor(experts, device=idx.device))
                self._count(layer, experts, idx)
                return (logits, torch.where(hit, weights * beta, weights), idx, *out[3:])

            return after
        renorm = _renormalises(router)
        scale = torch.ones(router.weight.shape[0])
        scale[experts] = beta

        def before(module, args, out):
            logits, weights, idx = out[:3]
            p = torch.softmax(logits.float(), -1) * scale.to(logits.device)
            top, new_idx = torch.topk(p, idx.shape[-1], dim=-1)
            if renorm:
                top = top / top.sum(-1, keepdim=True).clamp_min(1e-20)
            self._count(layer, experts, new_idx)
            return (logits, top.to(weights.dtype), new_idx.to(idx.dtype), *out[3:])

        return before

    def attach(self) -> RouterBoost:
        self.chosen = {}
        hooks = [(self.routers[layer], self._hook(layer, ex)) for layer, ex in self.by_layer.items()]
        self._handles = [r.register_forward_hook(h) for r, h in hooks]
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> RouterBoost:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()


FORMAT = "steerable.rice/1"


@dataclass(frozen=True)
class Rice:
    """A RICE setting: which (layer, expert) pairs, β and the variant, bound to its model by fingerprint."""

    experts: tuple[tuple[int, int], ...]
    beta: float
    variant: Variant
    model: dict  # fingerprint of the model the experts were found on
    npmi: torch.Tensor | None = None  # [layers, experts], the table the experts were picked from
    info: dict = field(default_factory=dict)  # marker, corpus, counts, how they were picked
    scope: str = "all"  # every token is steered (the prefix cache keys rows by artifact and strength)
    method: str = "rice"

    def steering(self, model, layers_path: str | None = None, mode: str | None = None, strength: float | None = None):
        """The context manager that applies it; ``strength`` overrides β, ``mode`` the variant."""
        if mode is not None and mode not in VARIANTS:
            raise InputError(f"a RICE artifact boosts experts after or before the top-k choice, not {mode!r}")
        variant = mode or self.variant
        return RouterBoost(model, self.experts, self.beta if strength is None else strength, variant, layers_path)

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path = path if path.suffix == ".safetensors" else path.with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "format": FORMAT,
            "method": "rice",
            "experts": [list(p) for p in self.experts],
            "beta": self.beta,
            "variant": self.variant,
            "model": self.model,
            "info": self.info,
        }
        tensors = {"experts": torch.tensor(self.experts, dtype=torch.long).reshape(-1, 2)}
        if self.npmi is not None:
            tensors["npmi"] = torch.nan_to_num(self.npmi.float(), nan=-2.0)  # -2: a dense layer (no router)
        save_file(tensors, str(path), metadata={"steerable": json.dumps(header)})
        return path

    @classmethod
    def from_file(cls, tensors: dict, header: dict) -> Rice:
        try:
            experts = tuple((int(a), int(b)) for a, b in header["experts"])
            beta, variant = float(header["beta"]), header["variant"]
        except (KeyError, TypeError, ValueError):
            raise InputError(
                "the RICE artifact's header is malformed: re-create it with `steerable steer rice`"
            ) from None
        if variant not in VARIANTS or not (math.isfinite(beta) and beta >= 0):
            raise InputError(f"the RICE artifact holds variant {variant!r}, beta {beta}: re-create it")
        npmi = tensors.get("npmi")
        if npmi is not None:
            npmi = torch.where(npmi < -1.5, torch.full_like(npmi, float("nan")), npmi)
        return cls(experts, beta, variant, header["model"], npmi, header.get("info", {}))

    def check(self, model, tokenizer, layers_path: str | None = None, where: str | Path = "artifact") -> None:
        check_fingerprint(self.model, model, tokenizer, layers_path, where)
        RouterBoost(model, self.experts, self.beta, self.variant, layers_path)  # the experts exist in this model
