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

The two timescales (the paper's "two-timescale schedule"): within a stage the
latent policy takes every update (``stage_steps`` env steps of SAC, 0.5
updates per chunk); the decoder moves once per stage, refitted on the latent
policy's rollouts. The paper refits on the stage's recent rollouts of the
stochastic latent policy; the authors' ``configs/methods/gorl_diffusion.toml``
collects 4096 episodes (``collection.stochastic = true``) and fits them all
(no filter on return in ``algorithms/collection.py`` or the part of
``algorithms/decoder_training.py`` read here; returns are carried as
statistics). Their latent rates: PPO lr 1e-3 at stage 0 and 1e-4 later
(dm_control), the decoder lr 3e-4 for 50 epochs.

Two guards added here (measured reason in ``docs/results/control.md``, "GoRL
on PointNav"):
- ``gate``: a stage's latent policy must beat the decoder it steers before
  the decoder learns from it. Both are measured on ``select_episodes``
  episodes with seeds apart from the evaluation's: the latent policy
  (deterministic, as DSRL evaluates) on the decoder against the decoder
  alone (eps ~ N(0, I)). If it does not, the decoder stays for the next
  stage (logged as ``refit: false``);
- ``refit_top``: the decoder is refitted on the best ``refit_top`` fraction
  of the rollouts by return (1.0: all of them, as the paper).

Where it differs, and why:
- the latent policy is SAC (the brief allows PPO or SAC; the paper uses PPO),
  so it reuses DSRL's noise env, batching and entropy settings;
- the prior is the paper's N(0, I): no penalty pulls the latent policy's
  scale toward 0 (the authors' ``z_regularization`` is L2 on loc and scale),
  its only regulariser is SAC's entropy term with target 0;
- budgets are CPU-sized (``stage_steps`` env steps per stage, not 30-60M);
- ``gate`` and ``refit_top`` < 1 are not in the paper or the authors' code.
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
    stage_steps: int = opt(
        20_000, "Env steps of latent SAC per stage (10k stops at DSRL's early dip on PointNav).", ge=1, le=10_000_000
    )
    rollouts: int = opt(
        200, "Episodes of the latent policy collected after each stage for the refit.", ge=1, le=100_000
    )
    decoder_steps: int = opt(3000, "Gradient steps of each decoder refit (from scratch).", ge=1, le=10_000_000)
    eval_episodes: int = opt(100, "Episodes per evaluation of each stage's policies.", ge=1, le=10_000)
    gate: bool = opt(True, "Refit the decoder only after a stage whose latent policy beats it (else it stays).")
    select_episodes: int = opt(
        50, "Episodes (seeds apart from the evaluation's) on which --gate compares latent and decoder.", ge=1
    )
    refit_top: float = opt(
        0.5, "Fraction of the rollouts, best return first, the decoder is refit on (1: all, as the paper).", gt=0, le=1
    )
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


def best_episodes(data: Dataset, top: float) -> Dataset:
    """The ``ceil(top * episodes)`` episodes of highest return (ties: the earlier episode), renumbered 0, 1, ..."""
    slices = data.episode_slices()
    returns = np.array([data.reward[sl].sum() for sl in slices])
    keep = sorted(np.argsort(-returns, kind="stable")[: max(1, int(np.ceil(top * len(slices))))].tolist())
    rows = np.concatenate([np.arange(slices[e].start, slices[e].stop) for e in keep])
    episode = np.repeat(np.arange(len(keep)), [slices[e].stop - slices[e].start for e in keep])
    return Dataset(
        obs=data.obs[rows], action=data.action[rows], reward=data.reward[rows], next_obs=data.next_obs[rows],
        terminated=data.terminated[rows], truncated=data.truncated[rows], episode=episode,
        kind=data.kind[keep], success=data.success[keep],
    )  # fmt: skip


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
    eval_seed = 10_000 + cfg.seed  # DSRL's check seed: every row of the table meets the same episodes

    def success(ctl, episodes: int, seed: int) -> tuple[float, int]:
        """Success rate and env steps spent over ``episodes`` seeded episodes."""
        eps = evaluate(make_env(cfg.env), ctl, episodes, seed, progress=False)
        return summary("gorl", 1, eps)["success"], sum(e.steps for e in eps)

    for k in range(cfg.stages):
        sd = out / f"stage_{k}"
        select_seed = 20_000 + 100 * cfg.seed + k  # the gate's episodes, apart from the evaluation's
        base, _ = success(Controller(decoder), cfg.eval_episodes, eval_seed)
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
        steered, _ = success(ctl, cfg.eval_episodes, eval_seed)
        gate_row: dict = {}
        refit = True
        if cfg.gate:
            sel_latent, n1 = success(ctl, cfg.select_episodes, select_seed)
            sel_decoder, n2 = success(Controller(decoder), cfg.select_episodes, select_seed)
            refit = sel_latent > sel_decoder
            gate_row = {"select_latent": sel_latent, "select_decoder": sel_decoder, "select_env_steps": n1 + n2}
        row = {
            "stage": k,
            "env_steps": rec["env_steps"],
            "rollout_env_steps": 0,
            "decoder_success": base,
            "latent_success": steered,
            **gate_row,
            "refit": refit,
            "alpha": rec["final"].get("alpha"),
            "entropy": rec["final"].get("entropy"),
        }
        if refit:  # the slow timescale: the decoder moves once per stage, on the latent policy's rollouts
            data = collect_latent_rollouts(cfg.env, decoder, latent, cfg.rollouts, cfg.seed + 100 + k)
            kept = best_episodes(data, cfg.refit_top)
            row.update(
                rollout_env_steps=len(data),
                rollout_success=round(float(data.success.mean()), 4),
                refit_episodes=kept.episodes,
                refit_success=round(float(kept.success.mean()), 4),
            )
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
            decoder, drec = train_policy(pcfg, kept, decoder.action_scale, progress=False)
            drec["data_made_by"] = (
                f"gorl stage {k}: the best {kept.episodes} of {cfg.rollouts} rollouts of the latent policy "
                f"on the stage-{k} decoder"
            )
            decoder.save(pcfg.out, drec)
            decoder_dir = Path(pcfg.out)
            row["refit_loss"] = drec["final_loss_ema"]
        row["seconds"] = round(time.perf_counter() - t0, 1)
        stages.append(row)
        if progress:
            print(row, file=sys.stderr, flush=True)
    final = summary("base", 1, evaluate(make_env(cfg.env), Controller(decoder), cfg.eval_episodes, 10_000 + cfg.seed,
                                        progress=False))  # fmt: skip
    record = {
        **provenance(cfg, "control gorl"),
        "stages": stages,
        "final_decoder_success": final["success"],
        "final_decoder": str(decoder_dir),
        "env_steps": sum(r["env_steps"] + r["rollout_env_steps"] + r.get("select_env_steps", 0) for r in stages),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gorl.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
