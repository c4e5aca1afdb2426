"""GoRL: a latent policy and a generative decoder that take turns (Zhang, Wan et al., "GoRL", 2025; code in
bennidict23/GoRL, JAX on MuJoCo Playground).

The policy is pi(a | s) = integral of g(a | s, eps) pi_theta(eps | s) d eps.
Stages alternate:

(a) the decoder g (here the chunked diffusion policy, DDIM eta = 0, so eps is
    its initial noise) is frozen and a *fresh* latent policy pi_theta(eps | s)
    is trained by RL in eps-space: exactly DSRL's SAC over the noise
    (:func:`steerable.control.training.dsrl.train_dsrl`, same settings);
(b) the latent policy is frozen, its rollouts are collected (eps sampled from
    pi_theta, as the authors collect with the encoder's sampling policy), and
    a *fresh* decoder is fitted by the diffusion loss to map the fixed prior
    eps ~ N(0, I), given s, to the actions taken (behaviour cloning on those
    rollouts, :func:`steerable.control.training.bc.train_policy`).

Stage 0 starts from the BC policy as the decoder. The authors' defaults are a
fresh encoder each stage (``fresh_encoder_each_stage``) and a fresh decoder
(``decoder.initialization = "fresh"``): both are followed.

Where it differs, and why:
- the latent policy is SAC (the brief allows PPO or SAC; the paper uses PPO),
  so it reuses DSRL's noise env, batching and entropy settings;
- the prior is the paper's N(0, I): no penalty pulls the latent policy's
  scale toward 0 (the authors' ``z_regularization`` is L2 on loc and scale),
  its only regulariser is SAC's entropy term with target 0;
- budgets are CPU-sized (``stage_steps`` env steps per stage, not 30-60M).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from steerable.config import check, opt
from steerable.control.policies.diffusion_policy import DiffusionPolicy
from steerable.control.worlds.data import Dataset
from steerable.errors import ConfigError
from steerable.provenance import provenance


@dataclass(frozen=True)
class GoRLConfig:
    """How ``steerable control gorl`` alternates latent RL and decoder refits (the CLI's flags are these fields)."""

    policy: str = opt(..., "The stage-0 decoder: a diffusion policy directory (history 0, past 0).")
    out: str = opt(..., "Directory for each stage's latent policy and decoder (out/stage_k/...).")
    env: str = opt("builtin:pointnav", "The env to train in.")
    stages: int = opt(3, "Stages (latent RL, then a decoder refit on its rollouts).", ge=1, le=100)
    stage_steps: int = opt(10_000, "Env steps of latent SAC per stage.", ge=1, le=10_000_000)
    rollouts: int = opt(
        200, "Episodes of the latent policy collected after each stage for the refit.", ge=1, le=100_000
    )
    decoder_steps: int = opt(6000, "Gradient steps of each decoder refit (from scratch).", ge=1, le=10_000_000)
    eval_episodes: int = opt(100, "Episodes per evaluation of each stage's policies.", ge=1, le=10_000)
    seed: int = opt(0, "Seed.", ge=0)
    threads: int = opt(1, "torch threads.", ge=1, le=256)

    def __post_init__(self) -> None:
        check(self, "gorl: ")


def collect_latent_rollouts(env_name: str, decoder: DiffusionPolicy, latent, episodes: int, seed: int) -> Dataset:
    """Episodes of the latent policy (eps sampled from it) decoded through ``decoder``, as a dataset of the env
    actions actually executed."""
    from steerable.control.training.noise_env import NoiseActionEnv
    from steerable.control.worlds.envs import make_env
    from steerable.streams import item_seed

    env = NoiseActionEnv(make_env(env_name), decoder)
    cols: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
    episode, success = [], []
    torch.manual_seed(seed)  # SB3 samples the latent policy's eps with torch's global generator
    for e in range(episodes):
        obs, _ = env.reset(seed=item_seed(seed, e))
        done, info = False, {}
        while not done:
            w, _ = latent.predict(obs[None], deterministic=False)
            chunk = env.decode(obs, w[0])
            for a in chunk[: decoder.execute]:
                nxt, r, term, trunc, info = env.env.step(a)
                for k, v in zip(cols, (obs, a, r, nxt, term, trunc), strict=True):
                    cols[k].append(v)
                episode.append(e)
                obs, done = nxt, term or trunc
                if done:
                    break
            env.obs = obs
        success.append(bool(info.get("success", False)))
    f32 = ("obs", "action", "reward", "next_obs")
    return Dataset(
        **{k: np.asarray(v, np.float32 if k in f32 else bool) for k, v in cols.items()},
        episode=np.asarray(episode, np.int64),
        kind=np.asarray(["latent"] * episodes),
        success=np.asarray(success),
    )


def train_gorl(cfg: GoRLConfig, progress: bool = True) -> dict:
    """Stages of (fresh latent SAC on the frozen decoder, fresh decoder fitted to its rollouts); writes each
    stage's ``latent/sac.zip`` and ``decoder/``, and ``gorl.json`` with success per stage of: the decoder
    alone (eps ~ N(0, I)) and the latent policy on it (deterministic, as DSRL evaluates)."""
    from steerable.control.evaluate import evaluate, summary
    from steerable.control.policies.noise import load_noise_policy
    from steerable.control.steering.controller import Controller
    from steerable.control.steering.dsrl import DSRLController
    from steerable.control.training.bc import PolicyConfig, train_policy
    from steerable.control.training.dsrl import DSRLConfig, train_dsrl
    from steerable.control.worlds.envs import make_env

    torch.set_num_threads(cfg.threads)
    decoder = DiffusionPolicy.load(cfg.policy)
    if decoder.history or decoder.past:
        raise ConfigError("gorl's decoder sees only the current observation: pass a policy with history 0, past 0")
    out, t0, stages = Path(cfg.out), time.perf_counter(), []
    decoder_dir = Path(cfg.policy)
    for k in range(cfg.stages):
        sd = out / f"stage_{k}"
        eval_seed = 10_000 + cfg.seed  # DSRL's check seed: every row of the table meets the same episodes
        base = summary(
            "base", 1, evaluate(make_env(cfg.env), Controller(decoder), cfg.eval_episodes, eval_seed, progress=False)
        )
        dcfg = DSRLConfig(
            policy=str(decoder_dir),
            out=str(sd / "latent"),
            env=cfg.env,
            env_steps=cfg.stage_steps,
            eval_every=0,
            seed=cfg.seed + k,
            threads=cfg.threads,
        )
        rec = train_dsrl(dcfg, progress=False)
        latent = load_noise_policy(sd / "latent" / "sac.zip")
        ctl = DSRLController(decoder, noise_policy=latent)
        steered = summary("gorl", 1, evaluate(make_env(cfg.env), ctl, cfg.eval_episodes, eval_seed, progress=False))
        data = collect_latent_rollouts(cfg.env, decoder, latent, cfg.rollouts, cfg.seed + 100 + k)
        pcfg = PolicyConfig(
            data="-",
            out=str(sd / "decoder"),
            env=cfg.env,
            horizon=decoder.horizon,
            execute=decoder.execute,
            steps_inference=decoder.steps_inference,
            hidden=decoder.denoiser.config.hidden,
            layers=decoder.denoiser.config.layers,
            steps=cfg.decoder_steps,
            seed=cfg.seed + k,
            threads=cfg.threads,
        )
        decoder, drec = train_policy(pcfg, data, decoder.action_scale, progress=False)
        drec["data_made_by"] = f"gorl stage {k}: {cfg.rollouts} rollouts of the latent policy on the stage-{k} decoder"
        decoder.save(pcfg.out, drec)
        decoder_dir = Path(pcfg.out)
        row = {
            "stage": k,
            "env_steps": rec["env_steps"],
            "decoder_success": base["success"],
            "latent_success": steered["success"],
            "rollout_success": round(float(data.success.mean()), 4),
            "refit_loss": drec["final_loss_ema"],
            "alpha": rec["final"].get("alpha"),
            "entropy": rec["final"].get("entropy"),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        stages.append(row)
        if progress:
            print(row, file=sys.stderr, flush=True)
    final = summary("base", 1, evaluate(make_env(cfg.env), Controller(decoder), cfg.eval_episodes, 10_000 + cfg.seed,
                                        progress=False))  # fmt: skip
    record = {
        **provenance(cfg, "control gorl"),
        "stages": stages,
        "final_decoder_success": final["success"],
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gorl.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
