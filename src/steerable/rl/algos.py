"""Advantage estimators and policy losses as pure functions over tensors, registered by name.

Each returns ``(tensor, metrics)``. Shapes: ``logp``, ``old_logp``, ``ref_logp``
and ``mask`` are ``[B, T]`` (completion tokens; ``mask`` 1 on real tokens);
``advantages`` ``[B]`` or ``[B, T]``; rewards and the other per-sample inputs
``[B]``, where the batch is ``B = prompts × G`` laid out prompt-major: rows
``g·G .. g·G + G − 1`` are the ``G`` rollouts of prompt ``g``. Groups are formed
from that layout and checked against the prompts when given (a mis-grouped
batch silently mixes baselines across prompts: the classic GRPO bug).

Notation: ratio ``r = π_θ / π_old`` per token, ``A`` the advantage.
verl's ``core_algos.py`` is the model for the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from steerable.errors import ConfigError, InputError

Metrics = dict[str, float]
ADVANTAGES: dict[str, Callable[..., tuple[torch.Tensor, Metrics]]] = {}
POLICY_LOSSES: dict[str, Callable[..., tuple[torch.Tensor, Metrics]]] = {}


def register_advantage(name: str):
    def deco(fn):
        ADVANTAGES[name] = fn
        return fn

    return deco


def register_loss(name: str):
    def deco(fn):
        POLICY_LOSSES[name] = fn
        return fn

    return deco


@dataclass(frozen=True)
class RLConfig:
    """Every knob of the estimators and losses, with the papers' defaults."""

    eps_low: float = 0.2  # PPO clip range below 1
    eps_high: float = 0.2  # ... above 1 (DAPO's clip-higher: 0.28)
    scale_std: bool = True  # GRPO divides by the group std; Dr.GRPO does not
    eps_std: float = 1e-4
    # Clip-Cov / KL-Cov (Cui et al., "The Entropy Mechanism of RL for Reasoning LMs")
    clip_cov_ratio: float = 2e-4  # fraction of tokens detached
    clip_cov_lb: float = 1.0  # covariance window the detached tokens are drawn from
    clip_cov_ub: float = 5.0
    kl_cov_ratio: float = 2e-3  # fraction of tokens (largest covariance) that get the KL penalty
    kl_cov_coef: float = 1.0
    # MDPO: several steps on one batch with KL(π_θ ‖ π_θk) to the policy that sampled it
    mdpo_kl_coef: float = 0.1  # 1 / t_k
    # length-aware rewards
    length_weight: float = 0.5  # L-GRPO / self-rewarded efficiency: weight of the length term
    max_completion_length: int = 256
    # ASPO (Understanding Tool-Integrated Reasoning)
    aspo_delta: float = -2.0
    aspo_k: float = 0.7
    # ICPO: off-policy (demo-guided) tokens use −A·π/(π + γ), unclipped
    icpo_gamma: float = 0.1
    # IGPO: discount of the turn-reward returns, and what precedes the answer when it is probed
    igpo_gamma: float = 1.0
    igpo_probe: str = "A: "
    # ETTRL: Adv-Res by default; > 0: Adv-Clip at this bound instead (the paper's β = 2)
    ettrl_adv_clip: float = 0.0
    # ETTRL's entropy-fork tree rollouts (ETMR): each group is M trees of one full sample plus
    # `etmr_branches` new branches at each of its `etmr_forks` highest-entropy tokens: G = M (1 + B N)
    etmr_forks: int = 3
    etmr_branches: int = 1


# ---- groups --------------------------------------------------------------------------------------


def groups(n: int, group_size: int, prompts: Sequence | None = None) -> int:
    """Number of groups in a prompt-major batch of ``n``; with ``prompts``, check every group is one prompt."""
    if group_size < 1 or n % group_size:
        raise InputError(f"a batch of {n} rollouts does not split into groups of {group_size}")
    if prompts is not None:
        if len(prompts) != n:
            raise InputError(f"{len(prompts)} prompts for {n} rollouts")
        for g in range(n // group_size):
            block = prompts[g * group_size : (g + 1) * group_size]
            if any(p != block[0] for p in block):
                raise InputError(
                    f"group {g} mixes prompts: rollouts must be laid out prompt-major, {group_size} per prompt"
                )
    return n // group_size


def _grouped(x: torch.Tensor, group_size: int) -> torch.Tensor:
    return x.view(-1, group_size)


# ---- advantages ----------------------------------------------------------------------------------


@register_advantage("grpo")
def grpo_advantage(rewards: torch.Tensor, group_size: int, cfg: RLConfig = RLConfig(), prompts=None, **_):
    """``A_i = (R_i − mean_G R) / (std_G R + ε)`` (Shao et al., DeepSeekMath); Dr.GRPO drops the std."""
    groups(len(rewards), group_size, prompts)
    r = _grouped(rewards.float(), group_size)
    mean = r.mean(1, keepdim=True)
    adv = r - mean
    std = r.std(1, keepdim=True, unbiased=True) if group_size > 1 else torch.zeros_like(mean)
    if cfg.scale_std:
        adv = adv / (std + cfg.eps_std)
    zero = (std.squeeze(1) < 1e-8).float().mean().item()
    return adv.reshape(-1), {"frac_zero_std": zero, "reward_mean": float(rewards.float().mean())}


@register_advantage("dr_grpo")
def dr_grpo_advantage(rewards: torch.Tensor, group_size: int, cfg: RLConfig = RLConfig(), prompts=None, **_):
    """``A_i = R_i − mean_G R`` (Liu et al., "Understanding R1-Zero-Like Training"): no std scaling."""
    from dataclasses import replace

    return grpo_advantage(rewards, group_size, replace(cfg, scale_std=False), prompts)


@register_advantage("l_grpo")
def l_grpo_advantage(
    rewards: torch.Tensor,
    group_size: int,
    cfg: RLConfig = RLConfig(),
    prompts=None,
    correct: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    **_,
):
    """L-GRPO (ConciseR, "Walk Before You Run!"): ``R_i += λ (1 − L_i / L_max)`` only in groups where
    every rollout is correct, so the model learns to be right first and short second; then GRPO."""
    if correct is None or lengths is None:
        raise ConfigError("l_grpo needs correct and lengths per rollout")
    groups(len(rewards), group_size, prompts)
    all_ok = _grouped(correct.bool(), group_size).all(1, keepdim=True).expand(-1, group_size).reshape(-1)
    bonus = cfg.length_weight * (1 - lengths.float() / cfg.max_completion_length).clamp(min=0)
    shaped = rewards.float() + torch.where(all_ok, bonus, torch.zeros_like(bonus))
    adv, m = grpo_advantage(shaped, group_size, cfg, prompts)
    return adv, {**m, "frac_groups_all_correct": float(all_ok.float().mean())}


@register_advantage("efficiency")
def efficiency_advantage(
    rewards: torch.Tensor,
    group_size: int,
    cfg: RLConfig = RLConfig(),
    prompts=None,
    correct: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    **_,
):
    """Self-rewarded efficiency ("Exploring and Exploiting the Inherent Efficiency within LRMs"): a correct
    rollout shorter than the model's own correct rollouts for the prompt earns
    ``λ (mean_correct L − L_i) / mean_correct L`` (more when shorter, less when longer); then GRPO."""
    if correct is None or lengths is None:
        raise ConfigError("efficiency needs correct and lengths per rollout")
    groups(len(rewards), group_size, prompts)
    ok = _grouped(correct.bool(), group_size)
    lens = _grouped(lengths.float(), group_size)
    n_ok = ok.sum(1, keepdim=True)
    mean_ok = (lens * ok).sum(1, keepdim=True) / n_ok.clamp(min=1)
    rel = ((mean_ok - lens) / mean_ok.clamp(min=1)).clamp(-1, 1)
    bonus = torch.where(ok & (n_ok > 0), cfg.length_weight * rel, torch.zeros_like(rel)).reshape(-1)
    adv, m = grpo_advantage(rewards.float() + bonus, group_size, cfg, prompts)
    return adv, {**m, "length_bonus_mean": float(bonus.mean())}


@register_advantage("aspo")
def aspo_advantage(
    rewards: torch.Tensor,
    group_size: int,
    cfg: RLConfig = RLConfig(),
    prompts=None,
    correct: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    **_,
):
    """ASPO ("Understanding Tool-Integrated Reasoning"): on correct rollouts
    ``A′ = A + clip(δ (p_i − mean p) / std p, −k|A|, k|A|)`` with ``p_i`` the position of the first tool
    call (here any per-rollout position the caller chooses); ``δ < 0`` favours earlier calls; the clip keeps
    the shaping from flipping the sign of ``A``."""
    if correct is None or positions is None:
        raise ConfigError("aspo needs correct and positions per rollout")
    adv, m = grpo_advantage(rewards, group_size, cfg, prompts)
    ok = correct.bool()
    p = positions.float()
    if int(ok.sum()) > 1:
        norm = p[ok].std().clamp(min=1e-6)
        shift = cfg.aspo_delta * (p - p[ok].mean()) / norm
        cap = cfg.aspo_k * adv.abs()
        adv = torch.where(ok, adv + torch.maximum(torch.minimum(shift, cap), -cap), adv)
    return adv, m


@register_advantage("ettrl")
def ettrl_advantage(
    rewards: torch.Tensor,
    group_size: int,
    cfg: RLConfig = RLConfig(),
    prompts=None,
    entropies: torch.Tensor | None = None,
    **_,
):
    """ETTRL's entropy-based advantage reshaping, Adv-Res ("Balancing Exploration and Exploitation in LLM
    Test-Time RL via Entropy Mechanism", §EAR): each rollout's GRPO advantage is scaled by its response
    entropy relative to its group,

        Y_i = 1 + (avg_j H(o_j) − H(o_i)) / avg_j H(o_j),      Â_i = Y_i · A_i,

    with ``H(o)`` the mean token entropy of rollout ``o``: confident (low-entropy) rollouts weigh more,
    uncertain ones less, which damps the early over-confidence of majority-vote pseudo-labels. ``Y`` is
    floored at 0 (our guard: a rollout with more than twice its group's entropy would otherwise have the
    sign of its advantage flipped). ``cfg.ettrl_adv_clip`` > 0 switches to the paper's Adv-Clip baseline,
    ``clip(A, −β, β)`` (β = 2 in the paper)."""
    if entropies is None:
        raise ConfigError("ettrl needs the mean token entropy of each rollout")
    adv, m = grpo_advantage(rewards, group_size, cfg, prompts)
    if cfg.ettrl_adv_clip > 0:
        return adv.clamp(-cfg.ettrl_adv_clip, cfg.ettrl_adv_clip), m
    h = _grouped(entropies.float(), group_size)
    avg = h.mean(1, keepdim=True)
    y = (1 + (avg - h) / avg.clamp(min=1e-8)).clamp(min=0).reshape(-1)
    return adv * y, {**m, "entropy_scale_min": float(y.min()), "entropy_scale_max": float(y.max())}


@register_advantage("brpo")
def brpo_advantage(
    rewards: torch.Tensor,
    group_size: int,
    cfg: RLConfig = RLConfig(),
    prompts=None,
    cut_rewards: torch.Tensor | None = None,
    cuts: torch.Tensor | None = None,
    priors: torch.Tensor | None = None,
    length: int | None = None,
    **_,
):
    """BRPO ("Optimizing Anytime Reasoning via Budget Relative Policy Optimization"), token-level.

    The thinking is cut at budgets ``b_1 < ... < b_S`` (``cuts[i, s]``: tokens kept) with prior
    ``p_s``; ``r_s`` scores the answer given after cut ``s`` (``cut_rewards[i, s]``). The return from budget
    ``s`` on is ``R_s = Σ_{j≥s} p_j r_j``. Tokens between cut ``s−1`` and cut ``s`` get ``A = R_s − B_s``,
    where the baseline ``B_s`` mixes the group's mean ``R_s`` at the same budget and what this trajectory
    had already earned: ``Σ_{j≥s} p_j r_{s−1}`` (the return had it stopped improving). Our reading of the
    paper's mixed baseline: an even mix. Returns ``[B, length]``."""
    if cut_rewards is None or cuts is None or priors is None or length is None:
        raise ConfigError("brpo needs cut_rewards, cuts, priors and length")
    groups(len(cut_rewards), group_size, prompts)
    n, s_count = cut_rewards.shape
    p = priors.float().to(cut_rewards.device)
    tail = p.flip(0).cumsum(0).flip(0)  # Σ_{j≥s} p_j
    ret = (cut_rewards.float() * p).flip(1).cumsum(1).flip(1)  # R_s
    group_mean = ret.view(-1, group_size, s_count).mean(1, keepdim=True).expand(-1, group_size, -1).reshape(n, s_count)
    earlier = torch.cat([torch.zeros(n, 1, device=ret.device), cut_rewards.float()[:, :-1]], dim=1)
    baseline = 0.5 * group_mean + 0.5 * earlier * tail
    seg_adv = ret - baseline  # [B, S]
    adv = torch.zeros(n, length, device=ret.device)
    start = torch.zeros(n, dtype=torch.long)
    for s in range(s_count):
        end = cuts[:, s].long().clamp(max=length)
        for i in range(n):
            if end[i] > start[i]:
                adv[i, start[i] : end[i]] = seg_adv[i, s]
        start = torch.maximum(start, end)
    return adv, {"return_mean": float(ret[:, 0].mean()), "cut_reward_mean": float(cut_rewards.float().mean())}


@register_advantage("igpo")
def igpo_advantage(
    rewards: torch.Tensor,
    group_size: int,
    cfg: RLConfig = RLConfig(),
    prompts=None,
    gains: Sequence[torch.Tensor] | None = None,
    token_turns: torch.Tensor | None = None,
    **_,
):
    """IGPO ("Information Gain-based Policy Optimization"), token-level. A rollout is a sequence of turns
    (here: lines); turn ``t < T`` earns its information gain about the ground-truth answer ``a``,

        r_{i,t} = π_θ(a | q, o_{i,≤t}) − π_θ(a | q, o_{i,≤t−1}),   π_θ(a | ·) = exp(mean_j log π_θ(a_j | ·, a_<j)),

    (``gains[i]``, one value per turn before the last) and the last turn the outcome reward ``R_i``. All
    turn rewards of a group are z-normalised together, ``A_{i,t} = Σ_{k≥t} γ^{k−t} r̂_{i,k}`` (``γ`` =
    ``cfg.igpo_gamma``), and every token of turn ``t`` (``token_turns[i, j] = t``; −1: padding) gets
    ``A_{i,t}``. Returns ``[B, L]``."""
    if gains is None or token_turns is None:
        raise ConfigError("igpo needs each rollout's per-turn information gains and its tokens' turns")
    n = groups(len(rewards), group_size, prompts) * group_size
    if len(gains) != n or token_turns.shape[0] != n:
        raise InputError(f"igpo: {len(gains)} gain lists and {token_turns.shape[0]} token rows for {n} rollouts")
    turn_r = [torch.cat([g.float().reshape(-1), rewards[i].float().reshape(1)]) for i, g in enumerate(gains)]
    adv = torch.zeros(token_turns.shape, dtype=torch.float32)
    gain_sum = 0.0
    for start in range(0, n, group_size):
        block = turn_r[start : start + group_size]
        flat = torch.cat(block)
        mean, std = flat.mean(), flat.std(unbiased=False)
        for i, r in enumerate(block, start):
            z = (r - mean) / (std + cfg.eps_std)
            ret = torch.zeros_like(z)
            acc = 0.0
            for t in range(len(z) - 1, -1, -1):
                acc = float(z[t]) + cfg.igpo_gamma * acc
                ret[t] = acc
            turns = token_turns[i]
            real = turns >= 0
            adv[i, real] = ret[turns[real].clamp(max=len(ret) - 1)]
            gain_sum += float(r[:-1].sum())
    return adv, {"gain_mean": gain_sum / max(1, n), "turns_mean": sum(len(r) for r in turn_r) / max(1, n)}


# ---- policy losses -------------------------------------------------------------------------------


def _as_tokens(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return advantages.unsqueeze(1).expand_as(like) if advantages.dim() == 1 else advantages


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, max_len: int | None = None) -> torch.Tensor:
    """``seq-mean-token-mean`` (GRPO), ``token-mean`` (DAPO, verl's default), ``seq-sum-max-len`` (Dr.GRPO)."""
    mask = mask.to(per_token.dtype)
    if mode == "seq-mean-token-mean":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if mode == "token-mean":
        return _masked_mean(per_token, mask)
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
        "clip_frac": float(_masked_mean((l2 > l1).to(ratio.dtype), m)),
        "ratio_mean": float(_masked_mean(ratio.detach(), m)),
    }


def _ppo(logp, old_logp, advantages, mask, cfg, mode, max_len=None):
    adv = _as_tokens(advantages, logp)
    ratio, l1, l2 = _clipped(logp, old_logp, adv, cfg)
    loss = aggregate(torch.maximum(l1, l2), mask, mode, max_len)
    return loss, _stats(ratio, l1, l2, mask)


@register_loss("grpo")
def grpo_loss(logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig(), **_):
    """``−min(r A, clip(r, 1 ± ε) A)``, mean over each sequence's tokens, then over sequences (GRPO)."""
    return _ppo(logp, old_logp, advantages, mask, cfg, "seq-mean-token-mean")


@register_loss("dr_grpo")
def dr_grpo_loss(logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig(), **_):
    """The clipped surrogate summed over tokens and divided by ``B · L_max`` (Dr.GRPO: no length bias)."""
    return _ppo(logp, old_logp, advantages, mask, cfg, "seq-sum-max-len", cfg.max_completion_length)


@register_loss("dapo")
def dapo_loss(logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig(eps_high=0.28), **_):
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
    logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig(), generator: torch.Generator | None = None, **_
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
        cov_mean=float(_masked_mean(cov, mf)),
        cov_max=float(cov[m].max()) if bool(m.any()) else 0.0,
        cov_detached_frac=float(_masked_mean((corr == 0).to(logp.dtype), mf)),
    )
    return loss, stats


@register_loss("kl_cov")
def kl_cov_loss(logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig(), **_):
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
        "ratio_mean": float(_masked_mean(ratio.detach(), mf)),
        "clip_frac": 0.0,
        "cov_mean": float(_masked_mean(cov, mf)),
        "cov_max": float(flat.max()) if len(flat) else 0.0,
        "kl_cov_frac": float(_masked_mean(sel.to(logp.dtype), mf)),
    }


@register_loss("mdpo")
def mdpo_loss(logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig(), **_):
    """MDPO (Tomar et al., "Mirror Descent Policy Optimization"): ``−r A + (1/t_k) KL(π_θ ‖ π_θk)`` with
    ``π_θk`` the policy that sampled the batch, minimised for several steps on it (set the trainer's
    iterations per batch > 1). KL per token by the k3 estimator ``e^{old−new} − (old−new) − 1``."""
    adv = _as_tokens(advantages, logp)
    ratio = torch.exp(logp - old_logp)
    d = old_logp - logp
    kl = torch.exp(d) - d - 1
    loss = aggregate(-adv * ratio + cfg.mdpo_kl_coef * kl, mask, "seq-mean-token-mean")
    mf = mask.to(logp.dtype)
    return loss, {"ratio_mean": float(_masked_mean(ratio.detach(), mf)), "kl_old": float(_masked_mean(kl.detach(), mf))}


@register_loss("icpo")
def icpo_loss(
    logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig(), off_policy: torch.Tensor | None = None, **_
):
    """ICPO ("Think Outside the Policy"): on-policy rollouts take the clipped surrogate; off-policy ones
    (``off_policy[i]`` True: sampled from a demo-augmented prompt, scored on the plain one) take the
    shaped, unclipped ``−A · π/(π + γ)`` with ``π = e^{log π_θ}``. Token-mean over the mixed group."""
    adv = _as_tokens(advantages, logp)
    ratio, l1, l2 = _clipped(logp, old_logp, adv, cfg)
    on = torch.maximum(l1, l2)
    p = torch.exp(logp)
    off = -adv * p / (p + cfg.icpo_gamma)
    if off_policy is None:
        off_policy = torch.zeros(logp.shape[0], dtype=torch.bool, device=logp.device)
    per = torch.where(off_policy[:, None].to(logp.device), off, on)
    loss = aggregate(per, mask, "token-mean")
    stats = _stats(ratio, l1, l2, mask)
    stats["off_policy_frac"] = float(off_policy.float().mean())
    return loss, stats


def entropy_stats(entropies: torch.Tensor, mask: torch.Tensor) -> Metrics:
    return {"entropy": float(_masked_mean(entropies.detach(), mask.to(entropies.dtype)))}


def majority_labels(answers: Sequence[str | None], group_size: int) -> list[str | None]:
    """TTRL: each group's pseudo-label is its most common extracted answer (None when no rollout has one)."""
    from collections import Counter

    groups(len(answers), group_size)
    out: list[str | None] = []
    for g in range(0, len(answers), group_size):
        votes = Counter(a for a in answers[g : g + group_size] if a is not None)
        label = votes.most_common(1)[0][0] if votes else None
        out.extend([label] * group_size)
    return out
