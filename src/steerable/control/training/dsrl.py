"""DSRL: diffusion steering by RL over the latent noise (Wagenmaker, Nakamoto, Zhang et al., CoRL 2025).

The diffusion policy stays frozen and samples with deterministic DDIM
(eta = 0), so its initial noise w maps to one action chunk: a = pi_dp(s, w).
SAC from stable-baselines3 learns a policy over w in Box(+-1.5)^(H x act_dim)
on :class:`NoiseActionEnv`, which decodes w and runs the chunk's first
``execute`` actions. As the authors run it (``cfg/*/dsrl_*.yaml``): target
entropy 0 (not SB3's "auto", -dim), automatic entropy coefficient, 2 critics
with the min backup, Tanh activations, gamma 0.99 per chunk, tau 0.005, and
the first ``learning_starts`` steps from the base policy itself (w ~ N(0, I),
clipped to the box: :class:`GaussianBox`), not SB3's uniform warm-up.

Where it differs, and why:
- the wrapper stops a chunk at termination and passes ``truncated`` through
  (the authors' ``ActionChunkWrapper`` keeps stepping after ``done``, sums
  rewards past it and reports the time limit as terminal, which biases TD);
- stock SB3 has no LayerNorm hook (the authors' fork adds
  ``post_linear_modules``): ``layer_norm`` rebuilds the critics with it
  (the actor stays a plain Tanh MLP);
- ``envs`` noise envs run side by side (their chunks decode in one batch) and
  each step of them takes ``gradient_steps`` SAC updates: 8 updates per 16
  chunks, 0.5 per chunk, where the authors run 20 per chunk on GPUs (a CPU
  budget);
- the entropy coefficient starts at 0.01 (``alpha_init``) and log alpha has its
  own Adam rate 3e-3 (``alpha_lr``), where SB3 and the authors start at 1 and
  share the 3e-4 of the networks. Measured on PointNav (``sac_diagnostics``
  at each check): with alpha = 1 the soft bonus alpha * entropy is ~10 per
  chunk against chunk rewards of -0.04 to +-1, so Q (52 at 20k steps) values
  episode length, not reward; success ends an episode and with it the bonus,
  and success fell from 0.54 to 0.06 with timeouts rising (0 to 25 of 50). At
  0.5 updates per chunk alpha decays ~40x slower per env step than at the
  authors' 20, so it stayed above 0.5 for 20k steps. With alpha = 0.001 and
  the shared rate the entropy fell to -25 within 5k steps and the actor's
  noise saturated at the box (success 0.02). Starting at 0.01 with the faster
  rate, alpha tracks the target entropy 0 and the soft bonus stays within
  +-0.013 per chunk.
- TD targets are 3-step over chunks (``n_steps``, SB3's n-step replay), where
  the authors' SAC backs up one chunk. Measured on PointNav (seed 0, the
  same 16-env warm-up): one-step targets gave success 0.16, 0.02, 0.32, 0.70
  at 5k-20k env steps, 3-step 0.52, 0.62, 0.68, 0.68 (docs/results/control.md).

A run is a function of its seed: SB3's auto-reset passes ``seed=None`` and
:meth:`NoiseActionEnv.reset` no longer reseeds the warm-up sampler with it
(``seed(None)`` drew OS entropy, so two runs' warm-up noise differed), and a
success check (its evaluation, ``sac_diagnostics``) restores the numpy and
torch RNGs that SB3 draws batches and actions from. ``train_dsrl`` writes the
actor alone (``noise_policy.safetensors``, :func:`save_sac_actor`) beside
``sac.zip``; PointNav's ships in ``builtin/pointnav/noise_policy``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from steerable.config import check, opt
from steerable.control.policies.diffusion_policy import DiffusionPolicy
from steerable.control.policies.noise import save_sac_actor
from steerable.control.steering.dsrl import DSRLController
from steerable.control.training.noise_env import NoiseActionEnv, batched_vec_env
from steerable.errors import ConfigError, InputError
from steerable.provenance import provenance
from steerable.streams import item_seed


@dataclass(frozen=True)
class DSRLConfig:
    """How ``steerable control dsrl`` trains the noise-space policy (the CLI's flags are these fields)."""

    policy: str = opt(..., "Diffusion policy directory (from `steerable control train-policy`).")
    out: str = opt(..., "Directory to write the SAC noise policy to.")
    env: str = opt("builtin:pointnav", "The env to train in.")
    env_steps: int = opt(50_000, "Environment steps to train for.", ge=1, le=10_000_000)
    magnitude: float = opt(1.5, "Noise action bound: Box(+-magnitude).", gt=0, le=10)
    learning_starts: int = opt(2000, "Env steps of base-policy noise (N(0, I)) before learning.", ge=0)
    envs: int = opt(16, "Envs stepped side by side (their chunks decode in one batch).", ge=1, le=1024)
    gradient_steps: int = opt(
        8, "SAC updates per step of all envs (the authors' utd is 20 per chunk on GPU).", ge=1, le=1000
    )
    batch_size: int = opt(256, "SAC batch.", ge=1, le=65_536)
    lr: float = opt(3e-4, "Adam learning rate.", gt=0, le=1)
    gamma: float = opt(0.99, "Discount per chunk.", gt=0, le=1)
    width: int = opt(256, "Hidden width of actor and critics.", ge=8, le=4096)
    layers: int = opt(3, "Hidden layers.", ge=1, le=8)
    target_entropy: float = opt(0.0, "SAC target entropy (the paper's 0, not SB3's -dim).", ge=-1000, le=1000)
    alpha_init: float = opt(0.01, "Initial entropy coefficient (SB3 and the authors start at 1).", gt=0, le=100)
    alpha_fixed: bool = opt(False, "Keep the entropy coefficient at --alpha-init (no tuning).")
    alpha_lr: float = opt(3e-3, "Adam learning rate of log alpha (0: --lr, as SB3 and the authors).", ge=0, le=1)
    reward_scale: float = opt(1.0, "Multiplies every chunk reward SAC sees.", gt=0, le=1e6)
    layer_norm: bool = opt(True, "LayerNorm after each hidden layer of the critics (the authors' fork).")
    critics: int = opt(2, "Critics in the ensemble; the TD target takes their minimum (SB3's n_critics).", ge=1, le=20)
    tau: float = opt(0.005, "Polyak rate of the target critics.", gt=0, le=1)
    n_steps: int = opt(
        3, "n-step TD targets over chunks (SB3's n-step replay; 1: one-step, as the authors).", ge=1, le=100
    )
    eval_every: int = opt(5000, "Env steps between success checks (0: none).", ge=0)
    eval_episodes: int = opt(50, "Episodes per success check.", ge=1, le=10_000)
    seed: int = opt(0, "Seed.", ge=0)
    threads: int = opt(1, "torch threads.", ge=1, le=256)
    variant: Literal["sac", "na"] = opt("sac", "sac: SAC over the noise; na: noise-aliased (Q on actions distilled).")
    noise_critic_steps: int = opt(
        4,
        "na: Q^W distillation steps after each --gradient-steps critic steps (the authors: 10 after 20).",
        ge=1,
        le=1000,
    )

    def __post_init__(self) -> None:
        check(self, "dsrl: ")


def layer_norm_critics(sac, width: int, layers: int, lr: float) -> None:
    """Rebuild SB3's SAC critics as Linear-LayerNorm-Tanh stacks (the authors' ``post_linear_modules``)."""
    for critic in (sac.critic, sac.critic_target):
        for i, q in enumerate(critic.q_networks):
            mods: list[torch.nn.Module] = []
            d = q[0].in_features
            for _ in range(layers):
                mods += [torch.nn.Linear(d, width), torch.nn.LayerNorm(width), torch.nn.Tanh()]
                d = width
            net = torch.nn.Sequential(*mods, torch.nn.Linear(d, 1))
            critic.add_module(f"qf{i}", net)
            critic.q_networks[i] = net
    sac.critic_target.load_state_dict(sac.critic.state_dict())
    sac.critic.optimizer = torch.optim.Adam(sac.critic.parameters(), lr=lr)


def buffer_returns(buf, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """The discounted Monte-Carlo return of each chunk in SB3's replay buffer, over the rest of its episode
    as it was played (terminal or timed out), and which chunks have one (the open episode's do not).
    Both [size, n_envs]; the buffer must not have wrapped (``buffer_size`` covers the run)."""
    n = buf.pos
    g = np.zeros((n, buf.n_envs), np.float64)
    valid = np.zeros((n, buf.n_envs), bool)
    ret, seen = np.zeros(buf.n_envs), np.zeros(buf.n_envs, bool)
    for t in range(n - 1, -1, -1):
        done = buf.dones[t].astype(bool)
        ret = buf.rewards[t] + gamma * np.where(done, 0.0, ret)
        seen = seen | done
        g[t], valid[t] = ret, seen
    return g, valid


def sac_diagnostics(sac, n: int = 1024, seed: int = 0) -> dict:
    """What SAC's pieces are doing, on ``n`` replay chunks drawn by their own generator (so a check never moves
    training's RNG): the entropy coefficient alpha, the actor's entropy (-log pi, in SB3's [-1, 1] action units),
    the soft bonus alpha * entropy that every non-terminal chunk earns in the TD target, the critics' Q (min over
    the ensemble) at buffer noise and at the actor's, ``mc``: the discounted return those buffer chunks whose
    episode has ended really earned, ``q_gap``: their Q minus it (the overestimation), the mean chunk reward,
    and how far the actor's mean noise sits into tanh's saturation (|tanh(mu)| > 0.99)."""
    buf = sac.replay_buffer
    if buf is None or buf.size() == 0:
        return {}
    g, valid = buffer_returns(buf, sac.gamma)
    pick = np.random.default_rng(seed).integers(0, buf.pos * buf.n_envs, size=n)
    t_idx, e_idx = pick // buf.n_envs, pick % buf.n_envs
    obs = torch.as_tensor(buf.observations[t_idx, e_idx], dtype=torch.float32)
    act = torch.as_tensor(buf.actions[t_idx, e_idx], dtype=torch.float32)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        pi, log_prob = sac.actor.action_log_prob(obs)
        mean, log_std, _ = sac.actor.get_action_dist_params(obs)
        q_rows = torch.cat(sac.critic(obs, act), dim=1).min(dim=1).values.numpy()  # [n]
        q_pi = torch.cat(sac.critic(obs, pi), dim=1).min(dim=1).values.mean()
        alpha = float(torch.exp(sac.log_ent_coef).item()) if sac.log_ent_coef is not None else float(sac.ent_coef)
        entropy = float(-log_prob.mean())
        squashed = torch.tanh(mean)
    ended = valid[t_idx, e_idx]  # rows whose episode has ended: they have a Monte-Carlo return
    mc = round(float(g[t_idx, e_idx][ended].mean()), 4) if ended.any() else None
    gap = round(float((q_rows - g[t_idx, e_idx])[ended].mean()), 4) if ended.any() else None
    return {
        "alpha": round(alpha, 5),
        "entropy": round(entropy, 3),
        "soft_bonus": round(alpha * entropy, 4),
        "q_data": round(float(q_rows.mean()), 4),
        "q_pi": round(float(q_pi), 4),
        "mc": mc,
        "q_gap": gap,
        "reward": round(float(buf.rewards[t_idx, e_idx].mean()), 4),
        "mean_abs_w": round(float(squashed.abs().mean()) * float(sac.action_space.high[0]), 3),
        "saturated": round(float((squashed.abs() > 0.99).float().mean()), 3),
        "log_std": round(float(log_std.mean()), 3),
    }


def train_dsrl(cfg: DSRLConfig, progress: bool = True) -> dict:
    """SAC over the noise; a success check every ``eval_every`` env steps; writes ``sac.zip`` and ``training.json``."""
    if cfg.variant != "sac":
        raise ConfigError(f"train_dsrl runs --variant sac; --variant {cfg.variant} is dsrl_na.train_dsrl_na")
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    from steerable.control.evaluate import evaluate, summary
    from steerable.control.worlds.envs import make_env

    torch.set_num_threads(cfg.threads)
    policy = DiffusionPolicy.load(cfg.policy)
    envs = [NoiseActionEnv(make_env(cfg.env), policy, cfg.magnitude, cfg.reward_scale) for _ in range(cfg.envs)]
    for e in envs[1:]:
        e.proc = envs[0].proc  # one process: its usage counts every decode
    env = envs[0]
    if env.observation_space.shape[0] != policy.obs_dim:
        raise InputError(
            f"{cfg.policy} was trained on {policy.obs_dim}-dim observations, {cfg.env} has "
            f"{env.observation_space.shape[0]}: pass the env it was trained on"
        )
    vec = batched_vec_env(envs)
    vec.seed(cfg.seed)
    sac = SAC(
        "MlpPolicy",
        vec,
        learning_rate=cfg.lr,
        buffer_size=max(cfg.env_steps, 1000),
        batch_size=cfg.batch_size,
        gamma=cfg.gamma,
        tau=cfg.tau,
        n_steps=cfg.n_steps,
        learning_starts=max(1, cfg.learning_starts // policy.execute),  # counted in chunks
        gradient_steps=cfg.gradient_steps,
        ent_coef=cfg.alpha_init if cfg.alpha_fixed else f"auto_{cfg.alpha_init}",
        target_entropy=cfg.target_entropy,
        seed=cfg.seed,
        policy_kwargs={"net_arch": [cfg.width] * cfg.layers, "activation_fn": torch.nn.Tanh, "n_critics": cfg.critics},
        device="cpu",
    )
    if cfg.layer_norm:
        layer_norm_critics(sac, cfg.width, cfg.layers, cfg.lr)
    if cfg.alpha_lr and sac.ent_coef_optimizer is not None:
        sb3_update = sac._update_learning_rate  # SB3 resets every optimizer to --lr before each train call

        def update_learning_rate(optimizers) -> None:
            sb3_update(optimizers)
            for group in sac.ent_coef_optimizer.param_groups:
                group["lr"] = cfg.alpha_lr

        sac._update_learning_rate = update_learning_rate
    curve: list[dict] = []
    eval_env, start_env = make_env(cfg.env), make_env(cfg.env)

    def steps() -> int:
        return sum(e.env_steps for e in envs)

    t0 = time.perf_counter()
    train_outcomes: dict[str, int] = {}  # how the training episodes ended since the last check

    def check_now() -> None:
        ctl = DSRLController(policy, noise_policy=sac)
        np_state = np.random.get_state()  # a check must not move the RNGs training draws its batches from
        with torch.random.fork_rng():
            eps = evaluate(eval_env, ctl, cfg.eval_episodes, seed=10_000 + cfg.seed, progress=False)
        np.random.set_state(np_state)
        row = summary("dsrl", 1, eps)
        starts = np.stack([start_env.reset(seed=item_seed(10_000 + cfg.seed, i))[0] for i in range(cfg.eval_episodes)])
        with torch.no_grad():
            s0 = torch.as_tensor(starts, dtype=torch.float32)
            q_start = torch.cat(sac.critic(s0, sac.actor(s0, deterministic=True)), dim=1).min(dim=1).values.mean()
        curve.append(
            {
                "env_steps": steps(),
                "success": row["success"],
                "return": row["return"],
                "q_start": round(float(q_start), 4),  # Q of the greedy noise at those episodes' starts
                "outcomes": row["outcomes"],
                "train_outcomes": dict(sorted(train_outcomes.items())),
                "seconds": round(time.perf_counter() - t0, 1),
                **sac_diagnostics(sac),
            }
        )
        train_outcomes.clear()
        if progress:
            print(curve[-1], file=sys.stderr, flush=True)

    class Checks(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next = cfg.eval_every

        def _on_step(self) -> bool:
            for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
                if done:
                    k = str(info.get("outcome", "end"))
                    train_outcomes[k] = train_outcomes.get(k, 0) + 1
            if cfg.eval_every and steps() >= self.next:
                self.next += cfg.eval_every
                check_now()
            return steps() < cfg.env_steps

    if cfg.eval_every:
        check_now()  # the base policy's own noise: the starting point of the curve
    sac.learn(total_timesteps=10**9, callback=Checks())
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    sac.save(out / "sac.zip")
    save_sac_actor(sac, out)
    record = {
        **provenance(cfg, "control dsrl"),
        "env_steps": steps(),
        "chunks": int(sac.num_timesteps),
        "nfe": env.nfe,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "curve": curve,
        "final": sac_diagnostics(sac),
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
