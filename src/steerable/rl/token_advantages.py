"""Token-level advantage estimators: BRPO and IGPO give each part of a rollout its own advantage, ``[B, T]``.

Both need passes beyond the rollouts themselves (answers sampled after cuts, probes of the true answer's
probability); the trainer computes those inputs (:mod:`steerable.rl.inputs`), these functions stay pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from steerable.errors import InputError
from steerable.rl.core import RLConfig, grouped, groups, register_advantage

# ---- BRPO ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budgets:
    """BRPO's cuts of a batch of ``B`` rollouts at ``S`` budgets, ``A`` answers sampled after each cut."""

    scores: torch.Tensor  # [B, S, A] score of each answer sampled after cut s
    cuts: torch.Tensor  # [B, S] completion tokens kept at cut s (non-decreasing in s)
    priors: torch.Tensor  # [S] the budget prior p_s (normalised here)
    length: int  # T: the batch's completion width


def _segments(cuts: torch.Tensor, values: torch.Tensor, length: int) -> torch.Tensor:
    """``[B, T]``: tokens from cut ``s−1`` up to cut ``s`` get ``values[:, s]``; tokens past the last cut the last."""
    pos = torch.arange(length).unsqueeze(0)  # [1, T]
    seg = (pos.unsqueeze(-1) >= cuts.long().unsqueeze(1)).sum(-1).clamp(max=cuts.shape[1] - 1)  # [B, T]
    return values.gather(1, seg)


@register_advantage("brpo")
def brpo_advantage(
    rewards: torch.Tensor, group_size: int, cfg: RLConfig = RLConfig(), *, prompts=None, budgets: Budgets
):
    """BRPO ("Optimizing Anytime Reasoning via Budget Relative Policy Optimization"), as the official code
    (sail-sg/AnytimeReasoner ``brpo.py::compute_cot_advantage``) computes it.

    A rollout's thinking is cut at budgets ``s = 0..S−1`` with prior ``p`` (normalised to sum 1); ``r_s`` is
    the mean score of the answers sampled after cut ``s``. The return from budget ``s`` on is
    ``R_s = Σ_{j≥s} p_j r_j`` and its baseline mixes two values,

        V2_s = mean over the group of R_s,
        V1_s = (Σ_{j<s} 2^j r_j / Σ_{j<s} 2^j) · Σ_{j≥s} p_j      (this rollout's earlier scores; 0 at s = 0),
        baseline_s = (s V1_s + (S − s) V2_s) / S,

    so the first segment is judged against the group and later ones more and more against what this rollout
    had already earned. The thinking tokens between cut ``s−1`` and cut ``s`` get ``A = R_s − baseline_s``
    (no std scaling, as the official code). Returns ``[B, T]``; the sampled answers' own advantages are
    :func:`brpo_answer_advantages`."""
    n, s_count, _ = budgets.scores.shape
    groups(n, group_size, prompts)
    if len(rewards) != n:
        raise InputError(f"brpo: {n} rows of cut scores for {len(rewards)} rollouts")
    r = budgets.scores.float().mean(-1)  # [B, S]
    p = budgets.priors.float() / budgets.priors.float().sum()
    tail = p.flip(0).cumsum(0).flip(0)  # Σ_{j≥s} p_j
    ret = (r * p).flip(1).cumsum(1).flip(1)  # R_s
    if group_size > 1:
        v2 = grouped(ret, group_size).mean(1, keepdim=True).expand(-1, group_size, -1).reshape(n, s_count)
    else:
        v2 = torch.zeros_like(ret)
    w = 2.0 ** torch.arange(s_count, dtype=torch.float32)
    before = torch.cat([torch.zeros(n, 1), (r * w).cumsum(1)[:, :-1]], dim=1)
    weight = torch.cat([torch.ones(1), w.cumsum(0)[:-1]])  # Σ_{j<s} 2^j (1 at s = 0, where the sum is 0)
    v1 = before / weight * tail
    s = torch.arange(s_count, dtype=torch.float32)
    seg_adv = ret - (s * v1 + (s_count - s) * v2) / s_count  # [B, S]
    adv = _segments(budgets.cuts, seg_adv, budgets.length)
    m = {"return_mean": float(ret[:, 0].mean()), "cut_score_mean": float(r.mean())}
    m.update({f"cut_score_{k}": float(r[:, k].mean()) for k in range(s_count)})
    return adv, m


def brpo_answer_advantages(budgets: Budgets, group_size: int) -> torch.Tensor:
    """``[B, S, A]``: each sampled answer's score minus the mean score of the answers sampled from the same
    context (this rollout, the same cut; budgets whose cuts coincide share one pool, as the official code
    samples them from one prompt). With one answer per cut the baseline is the group's mean at that budget
    (official ``compute_summary_advantage``)."""
    scores = budgets.scores.float()
    n, s_count, a = scores.shape
    if a == 1:
        mean = grouped(scores, group_size).mean(1, keepdim=True).expand(-1, group_size, -1, -1)
        return scores - mean.reshape(n, s_count, 1)
    out = torch.zeros_like(scores)
    for i in range(n):
        for s in range(s_count):
            same = budgets.cuts[i] == budgets.cuts[i, s]
            out[i, s] = scores[i, s] - scores[i, same].mean()
    return out


# ---- IGPO ----------------------------------------------------------------------------------------


def _check_turns(n: int, gains: Sequence[torch.Tensor], token_turns: torch.Tensor) -> None:
    if len(gains) != n or token_turns.shape[0] != n:
        raise InputError(f"igpo: {len(gains)} gain lists and {token_turns.shape[0]} token rows for {n} rollouts")


@register_advantage("igpo")
def igpo_advantage(
    rewards: torch.Tensor,
    group_size: int,
    cfg: RLConfig = RLConfig(),
    *,
    prompts=None,
    gains: Sequence[torch.Tensor],
    token_turns: torch.Tensor,
):
    """IGPO ("Information Gain-based Policy Optimization") as the paper's text has it, token-level. A rollout
    is a sequence of turns (here: lines); turn ``t < T`` earns its information gain about the true answer ``a``,

        r_{i,t} = π_θ(a | q, o_{i,≤t}) − π_θ(a | q, o_{i,≤t−1}),   π_θ(a | ·) = exp(mean_j log π_θ(a_j | ·, a_<j)),

    (``gains[i]``, one value per turn before the last) and the last turn the outcome reward ``R_i``. All
    turn rewards of a group are z-normalised together, ``A_{i,t} = Σ_{k≥t} γ^{k−t} r̂_{i,k}`` (``γ`` =
    ``cfg.igpo_gamma``), and every token of turn ``t`` (``token_turns[i, j] = t``; −1: padding) gets
    ``A_{i,t}``. Returns ``[B, L]``. The official code differs: :func:`igpo_code_advantage`."""
    n = groups(len(rewards), group_size, prompts) * group_size
    _check_turns(n, gains, token_turns)
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


@register_advantage("igpo_code")
def igpo_code_advantage(
    rewards: torch.Tensor,
    group_size: int,
    cfg: RLConfig = RLConfig(),
    *,
    prompts=None,
    gains: Sequence[torch.Tensor],
    token_turns: torch.Tensor,
    outcomes: torch.Tensor,
):
    """IGPO as the official code (GuoqingWang1/IGPO) runs it. Token rewards: turn ``t``'s raw information
    gain (no normalisation) on its last token, the outcome ``outcomes[i]`` (the code's F1 of the answer, −2
    when no answer can be read) on the rollout's last token. Each token's return is
    ``G_{i,j} = Σ_{k≥j} γ^{k−j} r_{i,k}`` over token positions (the code fixes γ = 1; ``cfg.igpo_gamma``
    applies per token here) and its advantage ``G_{i,j} − mean_{i' ∈ group} G_{i',j}``: a baseline per token
    position, rollouts that already ended counting 0 there, and no std scaling (``compute_grpo_outcome_advantage``).
    The paper's text (:func:`igpo_advantage`) z-normalises turn rewards and works per turn instead."""
    n = groups(len(rewards), group_size, prompts) * group_size
    _check_turns(n, gains, token_turns)
    if len(outcomes) != n:
        raise InputError(f"igpo_code: {len(outcomes)} outcomes for {n} rollouts")
    real = token_turns >= 0
    tok_r = torch.zeros(token_turns.shape, dtype=torch.float32)
    for i in range(n):
        pos = real[i].nonzero().flatten()
        if not len(pos):
            continue
        turns = token_turns[i, pos]
        for t, g in enumerate(gains[i].float().reshape(-1)):
            at = pos[turns == t]
            if len(at):
                tok_r[i, at[-1]] += g
        tok_r[i, pos[-1]] += float(outcomes[i])
    ret = torch.zeros_like(tok_r)
    acc = torch.zeros(n)
    for j in range(tok_r.shape[1] - 1, -1, -1):  # right padding: a row's return restarts at its last token
        acc = (tok_r[:, j] + cfg.igpo_gamma * acc) * real[:, j].float()
        ret[:, j] = acc
    base = grouped(ret, group_size).mean(1, keepdim=True).expand(-1, group_size, -1).reshape(ret.shape)
    adv = (ret - base) * real.float()
    gain_sum = sum(float(g.sum()) for g in gains)
    return adv, {"gain_mean": gain_sum / max(1, n), "outcome_mean": float(outcomes.float().mean())}


# ---- EAPO ----------------------------------------------------------------------------------------


@register_advantage("eapo")
def eapo_advantage(
    rewards: torch.Tensor, group_size: int, cfg: RLConfig = RLConfig(), *, prompts=None, round_ids: torch.Tensor
):
    """EAPO, the efficiency-aware policy optimisation of IterResearch ("IterResearch: Rethinking Long-Horizon
    Agents via Markovian State Reconstruction", Chen et al. 2025). Every round ``t = 1..T_i`` of trajectory
    ``i`` (``T_i`` its rounds, ``R_i`` its outcome) is a sample of its own, with the geometrically discounted
    reward

        r_{i,t} = γ^(T_i − t) · R_i,

    so a correct trajectory that needs fewer rounds earns more on every round (``γ`` = ``cfg.eapo_gamma``).
    Advantages are normalised over all rounds of the group's ``G`` trajectories (a longer trajectory brings
    more samples), as GRPO normalises over rollouts:

        A_{i,t} = (r_{i,t} − mean_{j,s} r_{j,s}) / (std_{j,s} r_{j,s} + ε).

    ``round_ids[i, j]`` is the round of completion token ``j`` (0-based, −1 on the environment's tokens and on
    padding, :func:`steerable.rl.inputs.round_ids`); every token of round ``t`` gets ``A_{i,t}`` and the others
    0, ``[B, L]``. The loss (:func:`steerable.rl.losses.eapo_loss`) then treats each round as one sample.

    Where this differs from the paper: its rounds are separate prompts (the rebuilt workspace: question,
    report, last action and observation), ours share one growing context (the round's tokens are trained
    on the transcript so far); and its adaptive downsampling (dropping a few round samples so their count
    divides the data-parallel size) has nothing to do on one process, so every round is kept."""
    n = groups(len(rewards), group_size, prompts) * group_size
    if round_ids.shape[0] != n:
        raise InputError(f"eapo: {round_ids.shape[0]} rows of round ids for {n} rollouts")
    rounds = (round_ids.max(1).values + 1).clamp(min=0)  # [B] T_i
    adv = torch.zeros(round_ids.shape, dtype=torch.float32)
    zero_std = all_ok_trained = all_ok = 0
    for start in range(0, n, group_size):
        rows = range(start, start + group_size)
        per = [float(rewards[i]) * cfg.eapo_gamma ** torch.arange(int(rounds[i]) - 1, -1, -1.0) for i in rows]
        flat = torch.cat(per)
        if not len(flat):
            continue
        mean = flat.mean()
        std = flat.std(unbiased=True) if len(flat) > 1 else torch.tensor(0.0)
        zero_std += int(std < 1e-8)
        ok = all(float(rewards[i]) > 0 for i in rows)
        all_ok += int(ok)
        all_ok_trained += int(ok and std >= 1e-8)
        for i, r in zip(rows, per, strict=True):
            a = (r - mean) / (std + cfg.eps_std) if cfg.scale_std else r - mean
            real = round_ids[i] >= 0
            adv[i, real] = a[round_ids[i, real]]
    solved = rewards.float() > 0
    g = n // group_size
    m = {"correct_rounds_mean": float(rounds[solved].float().mean())} if bool(solved.any()) else {}
    return adv, {
        **m,
        "rounds_mean": float(rounds.float().mean()),
        "round_samples": float(rounds.sum()),
        "frac_zero_std": zero_std / g,
        # groups GRPO gives no gradient (every rollout solved) where the discount still ranks the rounds
        "all_correct_frac": all_ok / g,
        "all_correct_trained_frac": all_ok_trained / g,
        "reward_mean": float(rewards.float().mean()),
    }
