"""The refusal direction (Arditi et al. 2024, "Refusal in Language Models Is Mediated by a Single Direction").

Candidates are ``mean(harmful) - mean(harmless)`` layer inputs at every layer
and every post-instruction position (the last tokens of the prompt). The
refusal score of a prompt is the log-odds that the next token is a refusal
token. A candidate is kept when

- its layer is below ``max_layer_frac`` of the depth (later layers only
  reflect the decision),
- ablating it everywhere moves the next-token distribution on harmless
  prompts by a mean KL of at most ``kl_max`` (it does not wreck the model),
- adding it at its own layer makes harmless prompts refuse (mean score > 0),

and of those the one whose ablation lowers the harmful refusal score most wins.

``max_rank > 1`` extends the paper: when ablating one direction leaves more
than ``target_rate`` of harmful prompts leaning to refusal (log-odds > 0),
further candidates are added greedily
(each time the one whose joint ablation lowers the score most, within the KL
limit) and the whole subspace is ablated. In models where refusal is spread
over a few directions (the built-in model is one) a single direction is not
enough; Wollschläger et al. 2025 ("The Geometry of Refusal in Large Language
Models") find multi-dimensional refusal regions in large models too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from steerable.config import check, opt
from steerable.errors import ConfigError, InputError
from steerable.lm.padding import left_padded
from steerable.steer.extract import activations, mean_difference
from steerable.steer.interventions import Ablate, Add, steer
from steerable.steer.layers import decoder_layers


@dataclass(frozen=True)
class RefusalConfig:
    """Arditi et al.'s selection of the refusal direction (``steerable steer select-refusal``'s flags)."""

    # the built-in requests end in three post-instruction tokens; README's figures use all three
    positions: tuple[int, ...] = opt(
        (-1, -2, -3), "Post-instruction positions, from the prompt's end.", le=-1, min_items=1
    )
    max_layer_frac: float = opt(0.8, "Candidates only from layers below this share of depth.", gt=0, le=1)
    kl_max: float = opt(0.1, "Harmless next-token KL allowed under ablation.", gt=0)
    refusal_tokens: tuple[str, ...] = opt(("I",), "Comma-separated first tokens of a refusal.", min_len=1, min_items=1)
    addition_strength: float = opt(1.0, "Multiple of the direction added by the induce-refusal filter.", gt=0)
    max_rank: int = opt(1, "1 is the paper; more grows an ablation subspace greedily.", ge=1, le=64)
    target_rate: float = opt(
        0.05, "Stop growing the subspace once at most this share of harmful prompts still leans to refusal.", ge=0, le=1
    )
    batch_size: int = opt(32, "Prompts per forward pass.", ge=1, le=4096)

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class Candidate:
    layer: int
    position: int
    ablation_score: float  # mean harmful refusal log-odds with the direction ablated (lower is better)
    addition_score: float  # mean harmless refusal log-odds with it added at its layer (must be > 0)
    kl: float  # mean harmless KL(base || ablated) at the last position
    kept: bool


@dataclass(frozen=True)
class RefusalDirection:
    direction: torch.Tensor  # [hidden], unnormalised mean difference
    layer: int
    position: int
    base_harmful_score: float
    base_harmless_score: float
    candidates: tuple[Candidate, ...]
    subspace: torch.Tensor  # [k, hidden]: row 0 is ``direction``, the rest grown for ablation
    subspace_scores: tuple[float, ...]  # mean harmful refusal log-odds ablating the first 1..k rows
    subspace_rates: tuple[float, ...]  # share of harmful prompts with log-odds > 0, same

    def info(self) -> dict:
        return {
            "layer": self.layer,
            "rank": len(self.subspace),
            "subspace_scores": list(self.subspace_scores),
            "subspace_rates": list(self.subspace_rates),
            "position": self.position,
            "base_harmful_score": self.base_harmful_score,
            "base_harmless_score": self.base_harmless_score,
            "candidates": [asdict(c) for c in self.candidates],
        }


def refusal_token_ids(tokenizer, tokens: Sequence[str]) -> list[int]:
    ids = []
    for t in tokens:
        enc = tokenizer(t, add_special_tokens=False)["input_ids"]
        if not enc:
            raise ConfigError(f"refusal token {t!r} encodes to nothing in this tokenizer")
        ids.append(enc[0])
    return sorted(set(ids))


@torch.no_grad()
def _logprobs(model: nn.Module, tokenizer, texts: Sequence[str], batch_size: int, last_only: bool) -> torch.Tensor:
    """Next-token log-probabilities of left-padded batches: at the last position, or at every real one."""
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        enc = left_padded(tokenizer, texts[i : i + batch_size], dev)
        logits = model(**enc).logits.float()
        out.append(
            torch.log_softmax(logits[:, -1], -1)
            if last_only
            else torch.log_softmax(logits, -1)[enc["attention_mask"].bool()]
        )
    return torch.cat(out)


def last_logprobs(model: nn.Module, tokenizer, prompts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """Next-token log-probabilities after each prompt: ``[prompts, vocab]``."""
    return _logprobs(model, tokenizer, prompts, batch_size, last_only=True)


def token_logprobs(model: nn.Module, tokenizer, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """Next-token log-probabilities at every real position, rows concatenated: ``[tokens, vocab]``."""
    return _logprobs(model, tokenizer, texts, batch_size, last_only=False)


def _kl(base: torch.Tensor, other: torch.Tensor) -> float:
    return float((base.exp() * (base - other)).sum(-1).mean())


def refusal_scores(logprobs: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """log p(refusal) - log(1 - p(refusal)) per row."""
    lp = torch.logsumexp(logprobs[:, ids], -1)
    return lp - torch.log1p(-lp.exp().clamp(max=1 - 1e-7))


def select_refusal_direction(
    model: nn.Module,
    tokenizer,
    harmful: Sequence[str],
    harmless: Sequence[str],
    config: RefusalConfig = RefusalConfig(),
    layers_path: str | None = None,
    on_candidate: Callable[[], None] | None = None,
    capability: Sequence[str] = (),
) -> RefusalDirection:
    """``capability`` texts (e.g. worked solutions) must keep their per-token KL under ablation <= ``kl_max`` too:
    the paper guards only harmless requests' first token, which a small model can pass while losing a skill."""
    if not harmful or not harmless:
        raise InputError("refusal direction selection needs harmful and harmless prompts")
    n = len(decoder_layers(model, layers_path))
    ids = refusal_token_ids(tokenizer, config.refusal_tokens)
    bs = config.batch_size
    acts_h = activations(model, tokenizer, harmful, config.positions, bs, layers_path)
    acts_b = activations(model, tokenizer, harmless, config.positions, bs, layers_path)
    dirs = mean_difference(acts_h, acts_b)  # [positions, layers, hidden]
    base_b = last_logprobs(model, tokenizer, harmless, bs)
    base_c = token_logprobs(model, tokenizer, capability, bs) if capability else None

    def drift() -> float:
        """KL on harmless requests (and on capability texts) with the current steering."""
        kl = _kl(base_b, last_logprobs(model, tokenizer, harmless, bs))
        return max(kl, _kl(base_c, token_logprobs(model, tokenizer, capability, bs))) if capability else kl

    base_h_score = float(refusal_scores(last_logprobs(model, tokenizer, harmful, bs), ids).mean())
    base_b_score = float(refusal_scores(base_b, ids).mean())
    cands = []
    for pi, position in enumerate(config.positions):
        for layer in range(n):
            if layer >= config.max_layer_frac * n:
                continue
            r = dirs[pi, layer]
            if float(r.norm()) < 1e-6:  # e.g. layer 0 at a token every prompt shares: no direction at all
                cands.append(Candidate(layer, position, float("nan"), float("nan"), float("nan"), False))
                continue
            with steer(model, Ablate(r), layers_path=layers_path):
                abl_h = float(refusal_scores(last_logprobs(model, tokenizer, harmful, bs), ids).mean())
                kl = drift()
            with steer(model, Add(r, layers=(layer,), strength=config.addition_strength), layers_path=layers_path):
                add_b = float(refusal_scores(last_logprobs(model, tokenizer, harmless, bs), ids).mean())
            cands.append(Candidate(layer, position, abl_h, add_b, kl, kl <= config.kl_max and add_b > 0))
            if on_candidate:
                on_candidate()
    kept = [c for c in cands if c.kept]
    if not kept:
        raise ConfigError(
            f"no refusal direction candidate passes the filters (KL <= {config.kl_max}, addition induces refusal): "
            "use more prompts, other positions, or a larger --kl-max"
        )
    best = min(kept, key=lambda c: c.ablation_score)
    pick = lambda c: dirs[config.positions.index(c.position), c.layer]  # noqa: E731

    def ablated(rows: list[Candidate]) -> tuple[float, float, float]:
        """(mean harmful score, share still > 0, harmless KL) with ``rows`` ablated together."""
        with steer(model, Ablate(torch.stack([pick(c) for c in rows])), layers_path=layers_path):
            s = refusal_scores(last_logprobs(model, tokenizer, harmful, bs), ids)
            kl = drift()
        return float(s.mean()), float((s > 0).float().mean()), kl

    chosen = [best]
    score, rate, _ = ablated(chosen)
    scores, rates = [score], [rate]
    pool = [c for c in cands if c is not best and c.kl == c.kl]  # nan: no direction
    while len(chosen) < config.max_rank and rates[-1] > config.target_rate and pool:
        trials = [(t, c) for c in pool if (t := ablated([*chosen, c]))[2] <= config.kl_max]
        if not trials:
            break
        (score, rate, _), c = min(trials, key=lambda t: t[0][0])
        chosen.append(c)
        scores.append(score)
        rates.append(rate)
        pool.remove(c)
    subspace = torch.stack([pick(c) for c in chosen]).clone()
    return RefusalDirection(
        subspace[0],
        best.layer,
        best.position,
        base_h_score,
        base_b_score,
        tuple(cands),
        subspace,
        tuple(scores),
        tuple(rates),
    )
