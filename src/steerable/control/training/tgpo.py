"""TGPO training: the time-conditioned policy on relabelled data, rollouts, and the allocation critic."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from steerable.config import check, opt
from steerable.control.policies.critics import AllocationCritic
from steerable.control.policies.normalize import ObsScale
from steerable.control.steering.tgpo import TGPO
from steerable.control.worlds.data import Dataset
from steerable.control.worlds.envs import STLNav
from steerable.errors import InputError
from steerable.provenance import command_line, provenance
from steerable.streams import stream


# ---------------------------------------------------------------- the time-conditioned policy's data
def relabel(data: Dataset, per_episode: int = 6, seed: int = 0, min_gap: int = 4) -> Dataset:
    """Hindsight relabelling: for each episode and each of ``per_episode`` drawn times k (before any collision),
    a pseudo-episode of rows 0..k-1 whose observation is (x, y, vx, vy, pos_k, k - t): reach the point the
    episode reached at k, in the k - t steps it took. Actions are unchanged."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
    episode, n = [], 0
    for sl in data.episode_slices():
        obs, act, term = data.obs[sl], data.action[sl], data.terminated[sl]
        nxt = data.next_obs[sl]
        length = len(obs)
        # the last safe time: an episode that ended in a collision (negative terminal reward) stops before it
        last = length - 1 if (term[-1] and data.reward[sl][-1] < -0.5) else length
        if last < min_gap:
            continue
        for k in rng.integers(min_gap, last + 1, size=per_episode):
            target = nxt[k - 1, :2]  # the position reached after k steps
            left = (k - np.arange(k)).astype(np.float32)[:, None]
            o = np.concatenate([obs[:k, :4], np.repeat(target[None], k, 0), left], axis=1)
            o2 = np.concatenate([nxt[:k, :4], np.repeat(target[None], k, 0), left - 1], axis=1)
            cols["obs"].append(o)
            cols["next_obs"].append(o2)
            cols["action"].append(act[:k])
            cols["reward"].append(np.zeros(k, np.float32))
            cols["terminated"].append(np.zeros(k, bool))
            cols["truncated"].append(np.r_[np.zeros(k - 1, bool), True])
            episode.append(np.full(k, n, np.int64))
            n += 1
    if n == 0:
        raise InputError("relabel: no episode is long enough to relabel")
    return Dataset(
        **{k: np.concatenate(v).astype(np.float32 if k in ("obs", "next_obs", "action", "reward") else bool)
           for k, v in cols.items()},
        episode=np.concatenate(episode),
        kind=np.asarray(["relabelled"] * n),
        success=np.ones(n, bool),
    )  # fmt: skip


# ---------------------------------------------------------------- training: policy, rollouts, critic
@dataclass(frozen=True)
class TGPOConfig:
    """How ``steerable control tgpo`` trains the time-conditioned policy and the allocation critic."""

    data: str = opt(..., "PointNav dataset .npz (from `steerable control data`), relabelled with subgoals.")
    out: str = opt(..., "Directory for the policy (out/policy) and the allocation critic (out/critic).")
    minutes: float = opt(5.0, "Policy training wall time.", gt=0, le=24 * 60)
    steps: int | None = opt(None, "Exact policy training steps (overrides --minutes).", ge=1, le=10_000_000)
    relabels: int = opt(6, "Relabelled copies per demonstration.", ge=1, le=100)
    rollouts: int = opt(1500, "Episodes under random allocations to fit the critic on.", ge=10, le=1_000_000)
    critic_steps: int = opt(3000, "Critic gradient steps.", ge=1, le=1_000_000)
    seed: int = opt(0, "Seed.", ge=0)
    threads: int = opt(1, "torch threads.", ge=1, le=256)

    def __post_init__(self) -> None:
        check(self, "tgpo: ")


def collect(policy, episodes: int, seed: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s0 [n, 6], tau [n, 2], satisfied [n]) of rollouts of the policy under random allocations."""
    from steerable.control.evaluate import evaluate

    ctl = TGPO(policy, search="random")
    eps = evaluate(STLNav(), ctl, episodes, seed, progress=progress)
    rows = [ctl.chosen[stream(seed, e.index)] for e in eps]
    return (
        np.stack([r[0] for r in rows]),
        np.asarray([r[1] for r in rows]),
        np.asarray([bool(e.satisfied) for e in eps]),
    )


def train_critic(obs0, taus, sat, steps: int, seed: int, check_every: int = 25) -> tuple[AllocationCritic, dict]:
    """Cross-entropy fit of V(s0, tau) to satisfaction, early-stopped: 10% of the rollouts are held out and the
    weights with the lowest held-out loss (checked every ``check_every`` steps) are kept. Measured on STLNav's
    1,500 rollouts: 300 steps 0.566 held-out BCE, 3,000 steps 1.04 (the base rate's is 0.664): it overfits."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(sat))
    held, fit = idx[: max(1, len(idx) // 10)], idx[max(1, len(idx) // 10) :]
    if len(fit) == 0:
        raise InputError(f"tgpo: {len(sat)} rollouts leave none to fit the critic on: collect more")
    critic = AllocationCritic(ObsScale.fit(obs0[fit]))
    o, t, y = (torch.as_tensor(a) for a in (obs0.astype(np.float32), taus, sat.astype(np.float32)))
    opt_ = torch.optim.Adam(critic.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    h = torch.as_tensor(held)

    def held_loss() -> float:
        critic.eval()
        with torch.no_grad():
            out = float(loss_fn(critic.logit(o[h], t[h]), y[h]))
        critic.train()
        return out

    best = (held_loss(), 0, {k: v.clone() for k, v in critic.state_dict().items()})
    for step in range(1, steps + 1):
        i = torch.as_tensor(rng.choice(fit, size=min(256, len(fit))))
        loss = loss_fn(critic.logit(o[i], t[i]), y[i])
        opt_.zero_grad(set_to_none=True)
        loss.backward()
        opt_.step()
        if step % check_every == 0 or step == steps:
            cur = held_loss()
            if cur < best[0]:
                best = (cur, step, {k: v.clone() for k, v in critic.state_dict().items()})
    critic.load_state_dict(best[2])
    critic.eval()
    base = float(y[h].mean())
    prior_loss = -(base * math.log(base) + (1 - base) * math.log(1 - base)) if 0 < base < 1 else math.nan
    return critic, {
        "held_out_bce": round(best[0], 4),
        "held_out_bce_of_the_base_rate": round(prior_loss, 4),
        "kept_step": best[1],
    }


def train_tgpo(cfg: TGPOConfig, progress: bool = True) -> dict:
    from pathlib import Path

    from steerable.control.policies.normalize import ActionScale
    from steerable.control.training.bc import PolicyConfig, train_policy

    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    data = relabel(Dataset.load(cfg.data), cfg.relabels, cfg.seed)
    pcfg = PolicyConfig(
        data=cfg.data,
        out=str(Path(cfg.out) / "policy"),
        env="builtin:stlnav",
        minutes=cfg.minutes,
        steps=cfg.steps,
        seed=cfg.seed,
        threads=cfg.threads,
    )
    policy, record = train_policy(pcfg, data, ActionScale((-1.0, -1.0), (1.0, 1.0)), progress)
    record["command"] = command_line(cfg, "control tgpo")  # the policy's own config stays in its record
    record["relabelled_pseudo_episodes"] = data.episodes
    policy.save(pcfg.out, record)
    obs0, taus, sat = collect(policy, cfg.rollouts, cfg.seed + 1, progress)
    (Path(cfg.out) / "critic").mkdir(parents=True, exist_ok=True)
    np.savez(Path(cfg.out) / "critic" / "rollouts.npz", obs0=obs0, taus=taus, satisfied=sat)
    critic, fit = train_critic(obs0, taus, sat, cfg.critic_steps, cfg.seed)
    crecord = {
        **provenance(cfg, "control tgpo"),
        "rollouts": int(len(sat)),
        "satisfied_under_random_tau": round(float(sat.mean()), 4),
        **fit,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    critic.save(Path(cfg.out) / "critic", crecord)
    return {"policy_steps": record["steps"], **crecord}
