"""Weights: reinforcement learning from verifiable rewards, the GRPO family on TRL.

Advantage estimators and policy losses are pure functions registered by name
(:mod:`steerable.rl.core`, :mod:`steerable.rl.advantages`,
:mod:`steerable.rl.token_advantages`, :mod:`steerable.rl.losses`); a recipe
pairs them with its paper's defaults (:mod:`steerable.rl.algos`); the trainer
subclasses TRL's ``GRPOTrainer`` to use them (:mod:`steerable.rl.trainer`).
Nothing is imported here, so ``import steerable.rl`` does not load TRL.
"""
