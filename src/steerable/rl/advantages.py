"""Sequence-level advantage estimators: one advantage per rollout, ``[B]``. Registered by name.

Notation: ``R`` the reward of a rollout, ``mean_G`` / ``std_G`` over the ``G`` rollouts of its prompt.
Every estimator's keyword-only parameters are the inputs it declares (see :mod:`steerable.rl.core`).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from steerable.rl.core import RLConfig, grouped, groups, register_advantage


@register_advantage("grpo")
def grpo_advantage(rewards: torch.Tensor, group_size: int, cfg: RLConfig = RLConfig(), *, prompts=None):
    """``A_i = (R_i − mean_G R) / (std_G R + ε)`` (Shao et al., DeepSeekMath); Dr.GRPO drops the std."""
    groups(len(rewards), group_size, prompts)
    r = grouped(rewards.float(), group_size)
    mean = r.mean(1, keepdim=True)
    adv = r - mean
    std = r.std(1, keepdim=True, unbiased=True) if group_size > 1 else torch.zeros_like(mean)
    if cfg.scale_std:
        adv = adv / (std + cfg.eps_std)
    zero = (std.squeeze(1) < 1e-8).float().mean().item()
    return adv.reshape(-1), {"frac_zero_std": zero, "reward_mean": float(rewards.float().mean())}


@register_advantage("dr_grpo")
def dr_grpo_advantage(rewards: torch.Tensor, group_size: int, cfg: RLConfig = RLConfig(), *, prompts=None):
    """``A_i = R_i − mean_G R`` (Liu et al., "Understanding R1-Zero-Like Training"): no std scaling."""
    return grpo_advantage(rewards, group_size, replace(cfg, scale_std=False), prompts=prompts)


@register_advantage("l_grpo")
def l_grpo_advantage(
    rewards: torch.Tensor,
    group_size: int,
    cfg: RLConfig = RLConfig(),
    *,
    prompts=None,
    correct: torch.Tensor,
    lengths: torch.Tensor,
):
    """L-GRPO (ConciseR, "Walk Before You Run!"), the paper's stage 2: ``R_i += λ (1 − L_i / L_max)`` only in
    groups where every rollout is correct ("walk before you run": right first, short second); then GRPO.

    With GRPO's std scaling (the default, as the paper builds on GRPO) an all-correct group's advantages are
    the z-scores of its length terms, ``−(L_i − mean L) / std L``: the weight ``λ`` cancels and has no effect
    at all (mixed groups get no length term). It only matters with ``scale_std=False`` (Dr.GRPO-style). The
    exact form of the paper's length reward was not reachable here; ``1 − L / L_max`` is ours.

    Stage 1 of the paper is GRPO++ (the ``grpo_pp`` algorithm: clip-higher, dynamic sampling, an entropy
    bonus). Do not turn dynamic sampling on here: it drops the all-correct groups, the only ones this shapes."""
    groups(len(rewards), group_size, prompts)
    all_ok = grouped(correct.bool(), group_size).all(1, keepdim=True).expand(-1, group_size).reshape(-1)
    bonus = cfg.length_weight * (1 - lengths.float() / cfg.max_completion_length).clamp(min=0)
    shaped = rewards.float() + torch.where(all_ok, bonus, torch.zeros_like(bonus))
    adv, m = grpo_advantage(shaped, group_size, cfg, prompts=prompts)
    return adv, {**m, "frac_groups_all_correct": float(all_ok.float().mean())}


@register_advantage("efficiency")
def efficiency_advantage(
    rewards: torch.Tensor,
    group_size: int,
    cfg: RLConfig = RLConfig(),
    *,
    prompts=None,
    correct: torch.Tensor,
    lengths: torch.Tensor,
):
    """Self-rewarded efficiency ("Exploring and Exploiting the Inherent Efficiency within LRMs"): a correct
    rollout shorter than the model's own correct rollouts for the prompt earns
    ``λ (mean_correct L − L_i) / mean_correct L`` (more when shorter, less when longer); then GRPO."""
    groups(len(rewards), group_size, prompts)
    ok = grouped(correct.bool(), group_size)
    lens = grouped(lengths.float(), group_size)
    n_ok = ok.sum(1, keepdim=True)
    mean_ok = (lens * ok).sum(1, keepdim=True) / n_ok.clamp(min=1)
    rel = ((mean_ok - lens) / mean_ok.clamp(min=1)).clamp(-1, 1)
    bonus = torch.where(ok & (n_ok > 0), cfg.length_weight * rel, torch.zeros_like(rel)).reshape(-1)
    adv, m = grpo_advantage(rewards.float() + bonus, group_size, cfg, prompts=prompts)
    return adv, {**m, "length_bonus_mean": float(bonus.mean())}


def _first_calls(correct: torch.Tensor, tool_used: torch.Tensor, positions: torch.Tensor, group_size: int):
    """Per group ``[groups, G]``: which rollouts are correct and call a tool, the first calls' positions, how
    many such rollouts (at least 1, a divisor) and their mean position: what ASPO and the rejected shaping share."""
    ok = grouped(correct.bool() & tool_used.bool(), group_size)
    p = grouped(positions.float(), group_size)
    n = ok.sum(1, keepdim=True).clamp(min=1)
    return ok, p, n, (p * ok).sum(1, keepdim=True) / n


@register_advantage("aspo")
def aspo_advantage(
    rewards: torch.Tensor,
    group_size: int,
    cfg: RLConfig = RLConfig(),
    *,
    prompts=None,
    correct: torch.Tensor,
    tool_used: torch.Tensor,
    positions: torch.Tensor,
    lengths: torch.Tensor,
):
    """ASPO ("Understanding Tool-Integrated Reasoning", §3.3 Eq. 2): on top of the GRPO advantage, a rollout
    that is correct *and* calls a tool gets

        A′_i = A_i + clip(δ (p_i − mean p) / mean L, −k |A_i|, k |A_i|),

    with ``p_i`` the token position of its first tool call and the means over the correct tool-using
    rollouts of the same group (``L`` their lengths in tokens). ``δ < 0`` favours earlier calls; the clip
    keeps correctness dominant (the shift never flips the sign of ``A``). The paper's two settings are
    ``(δ, k) = (−1.5, 0.7)`` (algorithm ``aspo``) and ``(−2, 0.9)`` (``aspo_aggressive``). Dividing by
    ``std p`` instead is the variant the paper rejects as unstable.

    Which text is the tool call is ``cfg.aspo_marker``. The built-in world has no tool: its default marker
    ``A:`` makes the answer line stand in for it, so ``p_i`` is where a correct rollout starts answering and
    ASPO favours the correct rollouts that answer earlier (shorter solutions)."""
    adv, m = grpo_advantage(rewards, group_size, cfg, prompts=prompts)
    ok, p, n, mean_p = _first_calls(correct, tool_used, positions, group_size)
    mean_l = (grouped(lengths.float(), group_size) * ok).sum(1, keepdim=True) / n
    shift = (cfg.aspo_delta * (p - mean_p) / mean_l.clamp(min=1)).reshape(-1)
    cap = cfg.aspo_k * adv.abs()
    eligible = ok.reshape(-1)
    moved = torch.where(eligible, torch.maximum(torch.minimum(shift, cap), -cap), torch.zeros_like(adv))
    # whether the mechanism fired: a correct tool-using rollout whose advantage it changed (not when every such
    # rollout of the group calls at the same place, nor in an all-correct group, where A = 0)
    fired = moved.abs() > 1e-8
    return adv + moved, {
        **m,
        "aspo_eligible_frac": float(eligible.float().mean()),
        "aspo_shifted_frac": float(fired.float().mean()),
        "aspo_shift_abs_mean": float(moved.abs().mean()),
    }


@register_advantage("aspo_reward_shaping")
def aspo_reward_shaping_advantage(
    rewards: torch.Tensor,
    group_size: int,
    cfg: RLConfig = RLConfig(),
    *,
    prompts=None,
    correct: torch.Tensor,
    tool_used: torch.Tensor,
    positions: torch.Tensor,
):
    """The reward shaping that "Understanding Tool-Integrated Reasoning" (§3.3) tried before ASPO and rejects:
    a correct rollout that calls a tool earns

        R_i = 1 + δ clip((p_i − mean p) / std p, −c, c)

    (``δ`` = ``aspo_shaping_delta``, ``c`` = ``aspo_shaping_clip``; ``p`` the token position of the first
    call, mean and population std over the correct tool-using rollouts of the same group, 0 where they are
    fewer than two or all equal), a wrong one 0; then GRPO. In an all-correct group the normalisation turns
    the shaping term into the whole advantage: correctness no longer counts and half of the correct answers
    are pushed down, the collapse of the paper's Fig. 5. Kept as the control for ASPO, not to be used.
    The paper's values of ``δ`` and ``c`` were not reachable here: ``δ c = −1`` (ours) keeps a correct
    rollout's reward at or above a wrong one's, so any collapse comes from the normalisation."""
    groups(len(rewards), group_size, prompts)
    ok, p, n, mean = _first_calls(correct, tool_used, positions, group_size)
    std = (((p - mean) ** 2 * ok).sum(1, keepdim=True) / n).sqrt()
    z = torch.where(std > 1e-8, (p - mean) / std.clamp(min=1e-8), torch.zeros_like(p))
    bonus = cfg.aspo_shaping_delta * z.clamp(-cfg.aspo_shaping_clip, cfg.aspo_shaping_clip)
    eligible = ok.reshape(-1)
    shaped = torch.where(eligible, rewards.float() + bonus.reshape(-1), rewards.float())
    adv, m = grpo_advantage(shaped, group_size, cfg, prompts=prompts)
    all_ok = grouped(correct.bool(), group_size).all(1)
    return adv, {
        **m,
        "aspo_eligible_frac": float(eligible.float().mean()),
        "shaping_fired_frac": float((eligible & (bonus.reshape(-1).abs() > 1e-8)).float().mean()),
        "frac_groups_all_correct": float(all_ok.float().mean()),
    }


@register_advantage("icpo")
def icpo_advantage(
    rewards: torch.Tensor,
    group_size: int,
    cfg: RLConfig = RLConfig(),
    *,
    prompts=None,
    correct: torch.Tensor,
    off_policy: torch.Tensor,
    batches_done: int,
):
    """ICPO ("Think Outside the Policy", official code ``reward_score.py``): GRPO over the mixed group, where a
    correct demo-guided (off-policy) rollout's reward is raised by ``β max(0, 1 − t / T)`` (``β`` =
    ``icpo_bonus``, ``T`` = ``icpo_bonus_steps`` = 400, ``t`` the training batches so far)."""
    bonus = cfg.icpo_bonus * max(0.0, 1.0 - batches_done / cfg.icpo_bonus_steps)
    shaped = rewards.float() + bonus * (off_policy.bool() & correct.bool()).float()
    adv, m = grpo_advantage(shaped, group_size, cfg, prompts=prompts)
    return adv, {**m, "icpo_bonus": bonus}


@register_advantage("ettrl")
def ettrl_advantage(
    rewards: torch.Tensor,
    group_size: int,
    cfg: RLConfig = RLConfig(),
    *,
    prompts=None,
    entropies: torch.Tensor,
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
    adv, m = grpo_advantage(rewards, group_size, cfg, prompts=prompts)
    if cfg.ettrl_adv_clip > 0:
        return adv.clamp(-cfg.ettrl_adv_clip, cfg.ettrl_adv_clip), m
    h = grouped(entropies.float(), group_size)
    avg = h.mean(1, keepdim=True)
    y = (1 + (avg - h) / avg.clamp(min=1e-8)).clamp(min=0).reshape(-1)
    return adv * y, {**m, "entropy_scale_min": float(y.min()), "entropy_scale_max": float(y.max())}


def majority_labels(answers, group_size: int) -> list[str | None]:
    """TTRL: each group's pseudo-label is its most common extracted answer (None when no rollout has one)."""
    from collections import Counter

    groups(len(answers), group_size)
    out: list[str | None] = []
    for g in range(0, len(answers), group_size):
        votes = Counter(a for a in answers[g : g + group_size] if a is not None)
        label = votes.most_common(1)[0][0] if votes else None
        out.extend([label] * group_size)
    return out
