"""What every estimator and loss shares: their knobs (:class:`RLConfig`), the registries, and the groups.

An advantage estimator is ``fn(rewards, group_size, cfg, *, <inputs>) -> (advantages, metrics)`` and a
policy loss ``fn(logp, old_logp, advantages, mask, cfg, *, <inputs>) -> (loss, metrics)``. Their
keyword-only parameters are the inputs they declare (:func:`declared_inputs`): the trainer supplies exactly
those, by name, and refuses at construction an algorithm whose inputs it cannot compute. No function takes
``**kwargs``, so a misspelt input is a ``TypeError``, not a silently ignored value.

Shapes: ``logp``, ``old_logp`` and ``mask`` are ``[B, T]`` (completion tokens; ``mask`` 1 on real tokens);
``advantages`` ``[B]`` or ``[B, T]``; rewards and the other per-rollout inputs ``[B]``, where the batch is
``B = prompts × G`` laid out prompt-major: rows ``g·G .. g·G + G − 1`` are the ``G`` rollouts of prompt ``g``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from steerable.config import check, opt
from steerable.errors import InputError

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


def declared_inputs(fn: Callable) -> dict[str, bool]:
    """The inputs an estimator or loss declares: its keyword-only parameters, name -> required."""
    return {
        p.name: p.default is inspect.Parameter.empty
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


@dataclass(frozen=True)
class RLConfig:
    """Every knob of the estimators and losses, with the papers' defaults (``--set NAME=VALUE``)."""

    eps_low: float = opt(0.2, "PPO clip range below 1.", ge=0, lt=1)
    eps_high: float = opt(0.2, "PPO clip range above 1 (DAPO's clip-higher: 0.28).", ge=0)
    scale_std: bool = opt(True, "GRPO divides by the group's reward std; Dr.GRPO does not.")
    eps_std: float = opt(1e-4, "Added to the group std before dividing.", gt=0)
    entropy_coef: float = opt(
        0.0, "Entropy bonus: the loss minus this times the mean token entropy (GRPO++: 1e-3).", ge=0
    )
    # DAPO ("An Open-Source LLM RL System at Scale", §3.2): groups whose rewards are all equal carry no gradient
    dynamic_sampling: bool = opt(
        False, "DAPO's dynamic sampling: replace groups whose rewards are all equal by groups of new prompts."
    )
    dynamic_sampling_rounds: int = opt(
        4, "Generation rounds that refill such groups before the rest are dropped.", ge=1, le=100
    )
    # Clip-Cov / KL-Cov (Cui et al., "The Entropy Mechanism of RL for Reasoning LMs")
    clip_cov_ratio: float = opt(2e-4, "Clip-Cov: fraction of tokens detached.", ge=0, le=1)
    clip_cov_lb: float = opt(1.0, "Clip-Cov: lower bound of the covariance window.")
    clip_cov_ub: float = opt(5.0, "Clip-Cov: upper bound of the covariance window.")
    kl_cov_ratio: float = opt(2e-3, "KL-Cov: fraction of tokens (largest covariance) penalised.", ge=0, le=1)
    kl_cov_coef: float = opt(1.0, "KL-Cov: weight of the |log pi - log pi_old| penalty.", ge=0)
    # MDPO (Tomar et al.): minimise -r A + (1/t_k) KL(pi_theta || pi_k) with t_k annealed 1 -> 0 over training
    mdpo_kl_coef: float = opt(1.0, "MDPO: KL weight at the start of training (1/t_0; the official code's 1).", ge=0)
    mdpo_anneal: bool = opt(True, "MDPO: anneal t_k = 1 - k/K over the run, the KL weight growing as 1/t_k.")
    # length-aware rewards
    length_weight: float = opt(0.5, "L-GRPO / efficiency: weight of the length term.", ge=0)
    max_completion_length: int = opt(256, "L_max of the length terms (the run's token cap).", ge=1)
    # ASPO ("Understanding Tool-Integrated Reasoning", Eq. 2)
    aspo_delta: float = opt(-1.5, "ASPO: delta (negative favours earlier tool calls); the paper's -1.5 or -2.")
    aspo_k: float = opt(0.7, "ASPO: the shift is clipped to +-k|A|; the paper's 0.7 or 0.9.", ge=0, le=1)
    aspo_marker: str = opt(
        "A:",
        "ASPO: the first line starting with this text is the first tool call (built-in world: the answer line; "
        "builtin:agent tasks: their action, e.g. '>>>').",
    )
    aspo_shaping_delta: float = opt(-1.0, "ASPO's rejected reward shaping: delta of R = 1 + delta clip(z, +-c).")
    aspo_shaping_clip: float = opt(1.0, "ASPO's rejected reward shaping: the clip c of the z-scored position.", gt=0)
    # ICPO ("Think Outside the Policy"): off-policy tokens use -A pi/(pi + gamma), unclipped
    icpo_gamma: float = opt(0.1, "ICPO: gamma of the off-policy shaping pi/(pi + gamma).", gt=0)
    icpo_dual_clip: float = opt(3.0, "ICPO: dual-clip bound c on negative-advantage on-policy tokens.", gt=1)
    icpo_bonus: float = opt(1.0, "ICPO: reward bonus beta of a correct demo-guided rollout at step 0.", ge=0)
    icpo_bonus_steps: int = opt(400, "ICPO: the bonus decays to 0 over this many batches.", ge=1)
    # IGPO: discount of the turn-reward returns, and what precedes the answer when it is probed
    igpo_gamma: float = opt(1.0, "IGPO: discount of the returns.", ge=0, le=1)
    igpo_probe: str = opt("A: ", "IGPO: text forced before the true answer when its probability is probed.")
    # EAPO (IterResearch): round t of a trajectory of T rounds is a sample of reward gamma^(T - t) R
    eapo_gamma: float = opt(
        0.995, "EAPO: discount gamma of r_t = gamma^(T - t) R per round (1: outcome-only rounds).", gt=0, le=1
    )
    # ETTRL: Adv-Res by default; > 0: Adv-Clip at this bound instead (the paper's beta = 2)
    ettrl_adv_clip: float = opt(0.0, "ETTRL: > 0 clips advantages at this bound (Adv-Clip) instead of Adv-Res.", ge=0)
    # ETTRL's entropy-fork tree rollouts (ETMR): G = M (1 + branches x forks)
    etmr_forks: int = opt(3, "ETMR: forks per tree (its highest-entropy tokens).", ge=1)
    etmr_branches: int = opt(1, "ETMR: new branches at each fork.", ge=1)
    # BRPO ("Optimizing Anytime Reasoning via Budget Relative Policy Optimization")
    brpo_budgets: int = opt(4, "BRPO: budgets S, at L_max (s + 1) / S tokens.", ge=1, le=64)
    brpo_prior: Literal["uniform", "linear", "base"] = opt(
        "uniform", "BRPO: prior over budgets: uniform, linear (p proportional to b) or base (last budget only)."
    )
    brpo_answers: int = opt(4, "BRPO: answers sampled after each cut, their scores averaged.", ge=1, le=64)
    brpo_answer_tokens: int = opt(8, "BRPO: token cap of a sampled answer.", ge=1)
    brpo_train_answers: bool = opt(True, "BRPO: train the sampled answers with their own group-relative advantage.")
    # T-PPO ("Truncated Proximal Policy Optimization", Fan et al. 2025): windows, EGAE, a decoupled critic
    tppo_window: int = opt(32, "T-PPO: tokens generated per window l before each update.", ge=1, le=100_000)
    tppo_gamma: float = opt(1.0, "T-PPO: discount gamma of EGAE and of the critic's returns.", ge=0, le=1)
    tppo_lambda: float = opt(0.95, "T-PPO: lambda of EGAE (the policy's advantages).", ge=0, le=1)
    tppo_critic_lr: float = opt(1e-3, "T-PPO: learning rate of the value head (Adam).", gt=0, le=1)
    # off: the advantages keep the TD errors' scale (small where the critic has little left to explain); at lr 1e-5
    # on the built-in task both settings collapsed near window 120 (docs/results/rl.md)
    tppo_whiten: bool = opt(False, "T-PPO: whiten each window's advantages over its tokens (verl's GAE does).")
    # CAPO ("Stabilizing Policy Gradients for Sample-Efficient RL in LLM Reasoning"; the official GRPO run's values)
    capo_kl_max: float = opt(1e-4, "CAPO: trust region, a token whose predicted KL shift reaches it is masked.", gt=0)
    capo_objective_max: float = opt(
        0.01, "CAPO: a token whose predicted objective change reaches +-this (or < 0, not symmetric) is masked.", gt=0
    )
    capo_symmetric: bool = opt(
        True, "CAPO: mask objective changes <= -capo_objective_max (the paper's runs); false: any decrease (< 0)."
    )
    capo_direction: Literal["adam", "sgd"] = opt(
        "adam", "CAPO: the update direction its curvature model predicts: Adam's (the optimiser's) or SGD's."
    )
    capo_kl: Literal["sampled", "exact"] = opt(
        "sampled", "CAPO: the KL shift from the sampled token's Fisher (the official code) or the softmax Fisher."
    )

    def __post_init__(self) -> None:
        check(self)


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


def grouped(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[B, ...]`` as ``[B / G, G, ...]``."""
    return x.view(-1, group_size, *x.shape[1:])


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def flat_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """DAPO's filter: ``[B / G]`` True where every rollout of the group has the same reward (no gradient)."""
    r = grouped(rewards.float(), group_size)
    return (r.max(1).values - r.min(1).values).abs() < 1e-8
