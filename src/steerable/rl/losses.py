"""Policy losses as pure functions over per-token log-probabilities, registered by name.

``fn(logp, old_logp, advantages, mask, cfg, *, <inputs>) -> (loss, metrics)``; the keyword-only parameters
are the inputs a loss declares (see :mod:`steerable.rl.core`). Notation: ratio ``r = π_θ / π_old`` per token,
``A`` the advantage. verl's ``core_algos.py`` is the model for the registry.
"""

from __future__ import annotations

import torch

from steerable.errors import ConfigError
from steerable.rl.core import Metrics, RLConfig, masked_mean, register_loss


def _as_tokens(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return advantages.unsqueeze(1).expand_as(like) if advantages.dim() == 1 else advantages


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, max_len: int | None = None) -> torch.Tensor:
    """``seq-mean-token-mean`` (GRPO), ``token-mean`` (DAPO, verl's default), ``seq-sum-max-len`` (Dr.GRPO)."""
    mask = mask.to(per_token.dtype)
    if mode == "seq-mean-token-mean":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if mode == "token-mean":
        return masked_mean(per_token, mask)
    if mode == "seq-sum-max-len":
        return (per_token * mask).sum() / (per_token.shape[0] * (max_len or per_token.shape[1]))
    raise ConfigError(f"unknown aggregation {mode!r}")


def _clipped(logp, old_logp, adv, cfg: RLConfig):
    ratio = torch.exp(logp - old_logp)
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1 - cfg.eps_low, 1 + cfg.eps_high)
    return ratio, l1, l2


def _stats(ratio, l1, l2, mask) -> Metrics:
    m = mask.to(ratio.dtype)
    return {
        "clip_frac": float(masked_mean((l2 > l1).to(ratio.dtype), m)),
        "ratio_mean": float(masked_mean(ratio.detach(), m)),
    }


def _ppo(logp, old_logp, advantages, mask, cfg, mode, max_len=None):
    adv = _as_tokens(advantages, logp)
    ratio, l1, l2 = _clipped(logp, old_logp, adv, cfg)
    loss = aggregate(torch.maximum(l1, l2), mask, mode, max_len)
    return loss, _stats(ratio, l1, l2, mask)


@register_loss("grpo")
def grpo_loss(logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig()):
    """``−min(r A, clip(r, 1 ± ε) A)``, mean over each sequence's tokens, then over sequences (GRPO)."""
    return _ppo(logp, old_logp, advantages, mask, cfg, "seq-mean-token-mean")


@register_loss("ppo")
def ppo_loss(logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig()):
    """The clipped surrogate averaged over every real token of the batch (verl's default ``token-mean``)."""
    return _ppo(logp, old_logp, advantages, mask, cfg, "token-mean")


@register_loss("dr_grpo")
def dr_grpo_loss(logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig()):
    """The clipped surrogate summed over tokens and divided by ``B · L_max`` (Dr.GRPO: no length bias)."""
    return _ppo(logp, old_logp, advantages, mask, cfg, "seq-sum-max-len", cfg.max_completion_length)


@register_loss("dapo")
def dapo_loss(logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig(eps_high=0.28)):
    """DAPO: clip-higher (``ε_high`` > ``ε_low``; pass ``RLConfig(eps_high=0.28)``) and token-level
    normalisation (every token of the batch weighs the same)."""
    return _ppo(logp, old_logp, advantages, mask, cfg, "token-mean")


def _covariance(logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token ``(log π_t − mean log π)(A_t − mean A)`` over the batch's real tokens (detached)."""
    m = mask.bool()
    lp, a = logp.detach(), adv.detach()
    return (a - a[m].mean()) * (lp - lp[m].mean())


@register_loss("clip_cov")
def clip_cov_loss(
    logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig(), *, generator: torch.Generator | None = None
):
    """Clip-Cov: among real tokens whose covariance lies in ``[lb, ub]`` (and that PPO's clip did not already
    stop), detach a random ``clip_cov_ratio`` of all tokens (their loss × 0); the others get the clipped
    surrogate. Token-mean aggregation, as verl."""
    adv = _as_tokens(advantages, logp)
    ratio, l1, l2 = _clipped(logp, old_logp, adv, cfg)
    cov = _covariance(logp, adv, mask)
    m = mask.bool()
    clipped_by_ppo = (l2 > l1) & m
    window = (cov > cfg.clip_cov_lb) & (cov < cfg.clip_cov_ub) & m & ~clipped_by_ppo
    idx = window.nonzero()
    n = max(int(cfg.clip_cov_ratio * int(m.sum())), 1)
    corr = torch.ones_like(logp)
    if len(idx):
        pick = idx[torch.randperm(len(idx), generator=generator)[: min(n, len(idx))]]
        corr[pick[:, 0], pick[:, 1]] = 0.0
    loss = aggregate(torch.maximum(l1, l2) * corr, mask, "token-mean")
    stats = _stats(ratio, l1, l2, mask)
    mf = m.to(logp.dtype)
    stats.update(
        cov_mean=float(masked_mean(cov, mf)),
        cov_max=float(cov[m].max()) if bool(m.any()) else 0.0,
        cov_detached_frac=float(masked_mean((corr == 0).to(logp.dtype), mf)),
    )
    return loss, stats


@register_loss("kl_cov")
def kl_cov_loss(logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig()):
    """KL-Cov: the plain policy gradient ``−r A`` on every token, plus ``β |log π_θ − log π_old|`` on the
    ``kl_cov_ratio`` fraction of real tokens with the largest covariance. Fully on-policy the penalty and
    its gradient vanish, and this is exactly the vanilla policy gradient."""
    adv = _as_tokens(advantages, logp)
    ratio = torch.exp(logp - old_logp)
    pg = -adv * ratio
    cov = _covariance(logp, adv, mask)
    m = mask.bool()
    flat = cov[m]
    k = max(1, int(len(flat) * cfg.kl_cov_ratio)) if len(flat) else 0
    sel = torch.zeros_like(m)
    if k:
        top = torch.topk(flat, k).indices
        where = m.nonzero()[top]
        sel[where[:, 0], where[:, 1]] = True
    per = torch.where(sel, pg + cfg.kl_cov_coef * (logp - old_logp).abs(), pg)
    loss = aggregate(per, mask, "token-mean")
    mf = m.to(logp.dtype)
    return loss, {
        "ratio_mean": float(masked_mean(ratio.detach(), mf)),
        "clip_frac": 0.0,
        "cov_mean": float(masked_mean(cov, mf)),
        "cov_max": float(flat.max()) if len(flat) else 0.0,
        "kl_cov_frac": float(masked_mean(sel.to(logp.dtype), mf)),
    }


def mdpo_kl_weight(cfg: RLConfig, progress: float) -> float:
    """MDPO's KL weight ``1 / t_k`` with ``t_k = 1 − k/K`` (the fraction of the run left; floored at 1e-3),
    times ``mdpo_kl_coef``; constant ``mdpo_kl_coef`` without annealing."""
    if not cfg.mdpo_anneal:
        return cfg.mdpo_kl_coef
    return cfg.mdpo_kl_coef / max(1.0 - progress, 1e-3)


@register_loss("mdpo")
def mdpo_loss(logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig(), *, progress: float):
    """MDPO (Tomar et al., "Mirror Descent Policy Optimization"; official code
    manantomar/Mirror-Descent-Policy-Optimization, ``mdpo_on``): several SGD steps on one batch of

        −r A + (1 / t_k) KL(π_θ ‖ π_θk),      t_k = 1 − k/K,

    ``π_θk`` the policy that sampled the batch, ``k`` the batches so far of ``K`` (``progress`` = k/K): the
    step size ``t_k`` anneals from 1 to 0 as the official code's ``lr_now``, so the trust region tightens as
    training goes on (:func:`mdpo_kl_weight`). Take m > 1 steps per batch: the trainer's iterations (4 by
    default; the official example uses 10). Averaged over tokens, as the official code averages over samples.

    The official code computes KL(π_θ ‖ π_old) exactly (Gaussian policies). Over a vocabulary we only have
    the sampled tokens' log-probabilities, so the per-token ``e^{old−new} − (old−new) − 1`` (the k3
    estimator in GRPO's reference-KL form) stands in for it: it is unbiased for KL(π_θ ‖ π_old) on tokens
    drawn from π_θ, while ours come from π_old; the two agree to second order near π_θ = π_old, where the
    m steps on one batch stay."""
    coef = mdpo_kl_weight(cfg, progress)
    adv = _as_tokens(advantages, logp)
    ratio = torch.exp(logp - old_logp)
    d = old_logp - logp
    kl = torch.exp(d) - d - 1
    loss = aggregate(-adv * ratio + coef * kl, mask, "token-mean")
    mf = mask.to(logp.dtype)
    return loss, {
        "ratio_mean": float(masked_mean(ratio.detach(), mf)),
        "kl_old": float(masked_mean(kl.detach(), mf)),
        "mdpo_kl_weight": coef,
    }


@register_loss("icpo")
def icpo_loss(logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig(), *, off_policy: torch.Tensor):
    """ICPO ("Think Outside the Policy"; official ``compute_icpo_policy_loss``): on-policy rollouts take the
    dual-clipped surrogate, off-policy ones (``off_policy[i]`` True: sampled from a demo-augmented prompt,
    scored on the plain one) the shaped, unclipped ``−A · π/(π + γ)`` with ``π = e^{log π_θ}``. The dual clip
    (Ye et al. 2020) bounds the loss of negative-advantage tokens at ``−c A`` (``c`` = ``icpo_dual_clip`` = 3):

        on-policy:  max(−r A, −clip(r, 1 ± ε) A),  and for A < 0:  min(that, −c A).

    Token-mean over the mixed group."""
    adv = _as_tokens(advantages, logp)
    ratio, l1, l2 = _clipped(logp, old_logp, adv, cfg)
    clipped = torch.maximum(l1, l2)
    dual = torch.minimum(clipped, -adv * cfg.icpo_dual_clip)
    on = torch.where(adv < 0, dual, clipped)
    p = torch.exp(logp)
    off = -adv * p / (p + cfg.icpo_gamma)
    rows = off_policy.to(device=logp.device, dtype=torch.bool)[:, None]
    loss = aggregate(torch.where(rows, off, on), mask, "token-mean")
    stats = _stats(ratio, l1, l2, mask)
    on_mask = mask.to(logp.dtype) * (~rows).to(logp.dtype)
    stats["dual_clip_frac"] = float(masked_mean(((adv < 0) & (clipped > -adv * cfg.icpo_dual_clip)).float(), on_mask))
    stats["off_policy_frac"] = float(off_policy.float().mean())
    return loss, stats


def entropy_bonus(entropies: torch.Tensor, mask: torch.Tensor, cfg: RLConfig) -> torch.Tensor:
    """What the entropy bonus subtracts from any loss: ``entropy_coef`` × the token-mean entropy."""
    return cfg.entropy_coef * masked_mean(entropies, mask.to(entropies.dtype))


@register_loss("eapo")
def eapo_loss(logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig(), *, round_ids: torch.Tensor):
    """EAPO's loss (IterResearch), GSPO's clipped objective ("Group Sequence Policy Optimization", Zheng et
    al. 2025) with every round of a trajectory as one sample ``k``:

        s_k = exp(mean_{j ∈ k} (log π_θ − log π_old)),
        loss = mean_k max(−s_k A_k, −clip(s_k, 1 − ε_low, 1 + ε_high) A_k),

    the length-normalised sequence ratio over the round's real tokens (``mask``: the environment's tokens are
    out) and ``A_k`` its advantage (:func:`~steerable.rl.token_advantages.eapo_advantage`, constant over the
    round's tokens). ``round_ids[i, j]`` is the round of token ``j`` (−1: none). The mean runs over the
    batch's rounds, so each round weighs the same whatever its length. GSPO clips at ε = 3e-4 / 4e-4 (the
    ``eapo`` algorithm's settings); on-policy (one pass over a batch) ``s_k = 1`` and the gradient is
    ``−A_k`` times the round's mean token log-likelihood gradient."""
    m = mask.to(logp.dtype) * (round_ids >= 0).to(logp.dtype)
    width = int(round_ids.max()) + 1 if bool((round_ids >= 0).any()) else 1
    key = (torch.arange(len(logp), device=logp.device).unsqueeze(1) * width + round_ids.clamp(min=0)).reshape(-1)
    slots = len(logp) * width

    def per_round(x: torch.Tensor) -> torch.Tensor:  # [slots]: the sum of x over each round's real tokens
        return torch.zeros(slots, dtype=x.dtype, device=x.device).index_add(0, key, (x * m).reshape(-1))

    count = per_round(torch.ones_like(logp))
    real = count > 0
    log_s = per_round(logp - old_logp)[real] / count[real]
    adv = (per_round(_as_tokens(advantages, logp)).detach()[real] / count[real]).detach()
    s = torch.exp(log_s)
    l1 = -adv * s
    l2 = -adv * torch.clamp(s, 1 - cfg.eps_low, 1 + cfg.eps_high)
    loss = torch.maximum(l1, l2).mean() if bool(real.any()) else (logp * 0).sum()
    return loss, {
        "clip_frac": float((l2 > l1).float().mean()) if bool(real.any()) else 0.0,
        "ratio_mean": float(s.detach().mean()) if bool(real.any()) else 1.0,
        "rounds": float(real.sum()),
    }
