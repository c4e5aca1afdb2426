"""The RL algorithms: each is an advantage estimator and a policy loss (pure functions over tensors, registered
by name, the paper's equation in each docstring) plus the settings its paper runs them with.

- :mod:`steerable.rl.core`: the knobs (:class:`RLConfig`), the registries and the prompt-major groups;
- :mod:`steerable.rl.advantages`: one advantage per rollout (GRPO family, L-GRPO, ASPO, ICPO, ETTRL);
- :mod:`steerable.rl.token_advantages`: one per token (BRPO, IGPO, EAPO's rounds);
- :mod:`steerable.rl.losses`: the policy losses.

Every estimator and loss declares the inputs it needs as keyword-only parameters (``correct``,
``lengths``, ``budgets``, ``off_policy``, ...); the trainer computes exactly those
(:mod:`steerable.rl.inputs`). A recipe here names the pair and the paper's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from steerable.errors import ConfigError
from steerable.rl import advantages as _advantages  # noqa: F401  (registers the estimators)
from steerable.rl import capo as _capo  # noqa: F401  (registers CAPO's loss)
from steerable.rl import losses as _losses  # noqa: F401  (registers the losses)
from steerable.rl import token_advantages as _token_advantages  # noqa: F401
from steerable.rl.advantages import majority_labels
from steerable.rl.core import ADVANTAGES, POLICY_LOSSES, RLConfig, declared_inputs, groups
from steerable.rl.inputs import AT_LOSS_TIME, PROVIDERS
from steerable.rl.losses import entropy_bonus
from steerable.rl.token_advantages import Budgets, brpo_answer_advantages

__all__ = [
    "ADVANTAGES",
    "ALGOS",
    "POLICY_LOSSES",
    "Algo",
    "Budgets",
    "RLConfig",
    "brpo_answer_advantages",
    "check_inputs",
    "declared_inputs",
    "entropy_bonus",
    "groups",
    "majority_labels",
    "rl_config_for",
]


@dataclass(frozen=True)
class Algo:
    advantage: str = "grpo"
    loss: str = "grpo"  # or "trl": TRL's own loss_type
    reward: str = "exact"  # default reward spec for the algorithm
    iterations: int = 1  # optimisation passes over each generated batch (GRPO's mu; MDPO's m > 1)
    config: dict = field(default_factory=dict)  # RLConfig overrides: the paper's settings
    rollout: str | None = None  # "icpo": one rollout per group from a demo-augmented prompt; "etmr": trees
    # optimiser steps per generated batch, one per mini-batch (verl: train batch / PPO mini-batch). Only
    # then are later updates off-policy, the regime Clip-Cov / KL-Cov act in: on-policy, KL-Cov *is* the
    # plain policy gradient and Clip-Cov detaches a handful of tokens.
    minibatches: int = 1
    # "tppo": its own windowed loop (steerable.rl.tppo) instead of TRL's trainer; the advantage is then that
    # loop's (EGAE), not one of ADVANTAGES
    loop: str | None = None


ALGOS: dict[str, Algo] = {
    "grpo": Algo(),
    "dr_grpo": Algo("dr_grpo", "dr_grpo"),
    "dapo": Algo("grpo", "dapo", config={"eps_high": 0.28}),  # DAPO's loss; its sampling: dynamic_sampling=true
    "clip_cov": Algo("grpo", "clip_cov", minibatches=4),
    "kl_cov": Algo("grpo", "kl_cov", minibatches=4),
    "mdpo": Algo("grpo", "mdpo", iterations=4),
    # ConciseR's two stages: stage 1 GRPO++ (clip-higher, dynamic sampling, entropy bonus), then L-GRPO
    "grpo_pp": Algo("grpo", "grpo", config={"eps_high": 0.28, "dynamic_sampling": True, "entropy_coef": 1e-3}),
    "l_grpo": Algo("l_grpo", "grpo"),
    "efficiency": Algo("efficiency", "grpo"),
    # the paper's two settings, "conservative" and "aggressive"
    "aspo": Algo("aspo", "grpo", config={"aspo_delta": -1.5, "aspo_k": 0.7}),
    "aspo_aggressive": Algo("aspo", "grpo", config={"aspo_delta": -2.0, "aspo_k": 0.9}),
    # the reward shaping the ASPO paper rejects (its Fig. 5 collapse): the control, not a method to use
    "aspo_reward_shaping": Algo("aspo_reward_shaping", "grpo"),
    "ttrl": Algo("grpo", "grpo", reward="majority"),
    "icpo": Algo("icpo", "icpo", rollout="icpo"),
    # token-mean as the official (verl) code: the many short answer rows weigh per token, not per row
    "brpo": Algo("brpo", "ppo"),
    "igpo": Algo("igpo", "grpo"),  # turns = lines; information gain about the true answer per turn
    # the official code's form (raw gains, F1 outcome, per-position baseline), token-mean as its verl
    "igpo_code": Algo("igpo_code", "ppo"),
    "ettrl": Algo("ettrl", "grpo", reward="majority", rollout="etmr"),  # ETMR trees + Adv-Res
    # IterResearch's EAPO: every round of an agent episode a sample of reward gamma^(T - t) R, GSPO's sequence
    # ratio per round and its clip range (Zheng et al.: 3e-4 / 4e-4); agent tasks only (rounds are turns)
    "eapo": Algo("eapo", "eapo", config={"eps_low": 3e-4, "eps_high": 4e-4}),
    "trl_grpo": Algo("grpo", "trl"),  # TRL's own GRPO loss, for comparison (rl_overhead)
    # T-PPO: windows of l tokens, EGAE from a value head bootstrapped at the cut, the critic on completed
    # responses only; its clipped surrogate is the token-mean PPO loss over each window's new tokens
    "tppo": Algo("egae", "ppo", loop="tppo"),
    # CAPO: GRPO's loss on the tokens its LM-head curvature model keeps (the paper's tau_KL 1e-4, tau_J 0.01)
    "capo": Algo("grpo", "capo"),
}


def rl_config_for(algo: Algo, **overrides) -> RLConfig:
    """The algorithm's settings with the run's overrides on top (each value checked against its bounds)."""
    return replace(RLConfig(), **{**algo.config, **overrides})


def check_inputs(algo: Algo) -> None:
    """Every input the algorithm's estimator and loss declare can be computed (else a ConfigError now,
    before any sampling)."""
    if algo.loop == "tppo":  # EGAE lives in its loop (steerable.rl.tppo); only the loss is a registered one
        if algo.loss not in POLICY_LOSSES:
            raise ConfigError(f"unknown loss {algo.loss!r}: use one of {', '.join(POLICY_LOSSES)}")
        return
    if algo.advantage not in ADVANTAGES:
        raise ConfigError(f"unknown advantage {algo.advantage!r}: use one of {', '.join(ADVANTAGES)}")
    if algo.loss != "trl" and algo.loss not in POLICY_LOSSES:
        raise ConfigError(f"unknown loss {algo.loss!r}: use one of {', '.join(POLICY_LOSSES)}, trl")
    fns = [("advantage", ADVANTAGES[algo.advantage])]
    if algo.loss != "trl":
        fns.append(("loss", POLICY_LOSSES[algo.loss]))
    for what, fn in fns:
        for name, required in declared_inputs(fn).items():
            if required and name not in PROVIDERS and name not in AT_LOSS_TIME:
                raise ConfigError(f"{what} {fn.__name__} needs an input {name!r} that no provider computes")
