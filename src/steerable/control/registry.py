"""``steerable control eval``: build a method's controller by name and evaluate it on seeded episodes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from steerable.config import check, opt
from steerable.errors import ConfigError, InputError

BUILTIN = Path(__file__).parent / "builtin"
Method = Literal["base", "vgps", "rti", "dsrl", "ptp", "stl", "fk", "search", "tgpo"]


def builtin_dir(env: str, what: str) -> Path:
    """The shipped ``policy`` / ``critic`` of a built-in env (``builtin:pointnav`` -> builtin/pointnav/policy).

    STLNav is PointNav with a task on top: it is steered from PointNav's policy."""
    name = env.removeprefix("builtin:").replace("-", "_").lower()
    return BUILTIN / {"stlnav": "pointnav"}.get(name, name) / what


def tgpo_dir(cfg) -> Path:
    return BUILTIN / "tgpo" if cfg.tgpo == "builtin" else Path(cfg.tgpo)


@dataclass(frozen=True)
class EvalConfig:
    """How ``steerable control eval`` runs (the CLI's flags are these fields)."""

    env: str = opt("builtin:pointnav", "builtin:pointnav, builtin:memorynav, builtin:stlnav or Pendulum-v1.")
    method: Method = opt(
        "base",
        "base, vgps (K chunks by Q), rti (warm start), dsrl (learnt noise), ptp (verified), stl (guided), fk (STL), "
        "search (a strategy over chunks run in env forks, scored by r + gamma^n V), tgpo (STLNav: deadlines by V).",
    )
    budget: int = opt(
        1,
        "vgps: chunks K; rti: steps K' per prediction; ptp: candidates M; stl: guided last steps; fk: particles; "
        "search: the strategy's budget (plans); tgpo: allocations scored.",
        ge=1,
        le=1024,
    )
    episodes: int = opt(200, "Episodes (seeded: episode i starts at seed*1000003 + i).", ge=1, le=100_000)
    seed: int = opt(0, "Seed.", ge=0)
    policy: str = opt("builtin", "Diffusion policy directory, or 'builtin' (the shipped one for --env).")
    critic: str = opt("builtin", "IQL critic directory for vgps, or 'builtin'.")
    noise_policy: str = opt(
        "", "dsrl: the noise policy from `steerable control dsrl` (sac.zip, or actor.pt of --variant na)."
    )
    beta: float = opt(0.0, "vgps: softmax temperature over Q (0: argmax).", ge=0, le=1e6)
    rti_mode: Literal["direct", "renoise"] = opt("direct", "rti: the guess as x_t (authors') or re-noised (SDEdit).")
    strategy: str = opt(
        "bon", "search: the strategy (bon, beam, dvts, ...); tgpo: random, bon or mh over allocations.", min_len=1
    )
    tgpo: str = opt("builtin", "tgpo: the directory of `steerable control tgpo` (policy/ and critic/), or builtin.")
    depth: int = opt(2, "search: chunks each plan looks ahead (each run in its env fork).", ge=1, le=64)
    execute: int = opt(0, "Actions run per prediction (0: the policy's own; rti always runs 1).", ge=0, le=64)
    resume: str = opt("", "JSONL file of finished episodes: appended to, and a rerun skips them.")
    threads: int = opt(1, "torch threads.", ge=1, le=256)

    def __post_init__(self) -> None:
        check(self, "eval: ")


def load_policy(cfg: EvalConfig):
    from steerable.control.policies.diffusion_policy import DiffusionPolicy

    if cfg.method == "tgpo":
        return DiffusionPolicy.load(tgpo_dir(cfg) / "policy")
    path = builtin_dir(cfg.env, "policy") if cfg.policy == "builtin" else Path(cfg.policy)
    if cfg.policy == "builtin" and not path.exists():
        raise InputError(
            f"no shipped policy for {cfg.env}: train one with `steerable control train-policy` and pass --policy DIR"
        )
    return DiffusionPolicy.load(path)


def make_controller(cfg: EvalConfig, policy):
    from steerable.control.steering.controller import Controller

    execute = cfg.execute or None
    if cfg.method == "base":
        return Controller(policy, execute=execute)
    if cfg.method == "vgps":
        from steerable.control.policies.critics import IQLCritic
        from steerable.control.steering.vgps import VGPS

        path = builtin_dir(cfg.env, "critic") if cfg.critic == "builtin" else Path(cfg.critic)
        return VGPS(policy, execute=execute, critic=IQLCritic.load(path), k=cfg.budget, beta=cfg.beta)
    if cfg.method == "rti":
        from steerable.control.steering.rti import RTI

        return RTI(policy, k_prime=cfg.budget, mode=cfg.rti_mode)
    if cfg.method == "ptp":
        from steerable.control.steering.ptp import PTP

        return PTP(policy, execute=execute, m=cfg.budget)
    if cfg.method == "stl":
        from steerable.control.steering.stl_guide import STLGuided

        return STLGuided(policy, execute=execute, last=min(cfg.budget, policy.steps_inference))
    if cfg.method == "fk":
        from steerable.control.steering.stl_guide import STLFK

        return STLFK(policy, execute=execute, particles=cfg.budget)
    if cfg.method == "dsrl":
        from steerable.control.policies.noise import load_noise_policy
        from steerable.control.steering.dsrl import DSRLController

        if not cfg.noise_policy or not Path(cfg.noise_policy).exists():
            raise InputError("dsrl needs --noise-policy PATH/sac.zip: train it with `steerable control dsrl`")
        if cfg.noise_policy.endswith(".pt"):  # the actor of --variant na
            from steerable.control.policies.noise import load_na_actor

            return DSRLController(policy, execute=execute, noise_policy=load_na_actor(cfg.noise_policy))
        return DSRLController(policy, execute=execute, noise_policy=load_noise_policy(cfg.noise_policy))
    if cfg.method == "search":
        from steerable.control.policies.critics import IQLCritic
        from steerable.control.steering.lookahead import Lookahead

        path = builtin_dir(cfg.env, "critic") if cfg.critic == "builtin" else Path(cfg.critic)
        return Lookahead(
            policy, execute=execute, critic=IQLCritic.load(path), strategy=cfg.strategy, budget=cfg.budget,
            depth=cfg.depth,
        )  # fmt: skip
    if cfg.method == "tgpo":
        from steerable.control.policies.critics import AllocationCritic
        from steerable.control.steering.tgpo import TGPO

        if not cfg.env.endswith("stlnav"):
            raise ConfigError(f"tgpo plans STLNav's subgoals: run it with --env builtin:stlnav (got {cfg.env})")

        critic = None if cfg.strategy == "random" else AllocationCritic.load(tgpo_dir(cfg) / "critic")
        return TGPO(policy, execute=execute, critic=critic, search=cfg.strategy, budget=cfg.budget)
    raise ConfigError(f"unknown method {cfg.method!r}")
