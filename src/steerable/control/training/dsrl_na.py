"""DSRL-NA: noise-aliased DSRL (Wagenmaker et al., CoRL 2025; class ``DSRL`` in the authors' SB3 fork).

Same frozen DDIM (eta = 0) policy and :class:`NoiseActionEnv` as DSRL-SAC, but
two pairs of critics: one on actions, one on noise. With a = pi_dp(s, w) the
decoded chunk (in the policy's normalised units, flattened) and pi^W the
tanh-Gaussian noise actor on Box(+-magnitude), one training call (after each
step of all envs) is ``gradient_steps`` critic steps, then
``noise_critic_steps`` distillation steps:

  each critic step, on a replay batch (a the chunk actually executed):
    Q^A by TD:  y = r + gamma (1 - terminated) [min_j Qbar^A_j(s', pi_dp(s', w')) - alpha log pi^W(w'|s')],
                w' ~ pi^W(s'),  loss = sum_j (Q^A_j(s, a) - y)^2 / 2
    the actor:  loss = alpha log pi^W(w|s) - min_j Q^W_j(s, w),  w ~ pi^W(s)
    alpha:      loss = -log alpha (log pi^W(w|s) + target_entropy)   (as SAC)
  each distillation step, on a fresh replay batch of states and fresh noise w ~ N(0, I):
    loss = sum_j (Q^W_j(s, w) - Q^A_j(s, pi_dp(s, w)))^2 / 2
    (noise head j regressed on action head j, not on their minimum)

As the authors' fork does it (``stable_baselines3/dsrl/dsrl.py``, read in
songgaogy/stable-baselines3-dsrl): ``train()`` runs its ``gradient_steps``
critic and actor steps, then ``for gradient_step in
range(self.noise_critic_grad_steps)`` distillation steps, each on
``self.replay_buffer.sample(batch_size)``; ``update_noise_critic`` sums
``0.5 * F.mse_loss(current_q.detach(), current_q_noise)`` over
``current_q_values[i]`` and ``current_q_noise_vals[i]``, head by head, with
``current_q_values = self.critic(obs, diffused_actions)`` (the online Q^A).
Their ``cfg/gym/dsrl_hopper.yaml`` sets ``utd: 20`` and
``noise_critic_grad_steps: 10``: 10 distillation steps per 20 critic steps,
0.5 per critic step. Here ``gradient_steps`` 8 and ``noise_critic_steps`` 4
keep that 0.5.

Aliasing: many w decode to the same a, so Q^W learns from every w whose
chunk Q^A has seen, not only the w that was played.

Where it differs from the authors' code, and why:
- written in torch here (no SB3 fork); the chunk wrapper, warm-up from N(0, I)
  noise clipped to the box, LayerNorm+Tanh critics, alpha_init / alpha_lr,
  and ``gradient_steps`` updates per step of all envs are DSRL-SAC's
  (:mod:`steerable.control.training.dsrl`, which says why each differs from the paper);
  8 critic steps per 16 chunks (0.5 per chunk, a CPU budget) where the
  authors run 20 per 2 chunks;
- the TD target stops at termination, not at the time limit (the authors'
  wrapper reports the limit as terminal);
- Q^W sees w in the box's units (+-magnitude), the fork's scaled to +-1 by
  ``scale_action`` (a fixed linear map of the input, the same function class);
- Q^A sees the chunk in the policy's normalised action units (all H steps,
  also those not executed), so it is the same a that pi_dp(s', w') gives for
  the backup.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from steerable.control.policies.diffusion_policy import DiffusionPolicy
from steerable.control.policies.noise import NoiseActor, mlp
from steerable.control.steering.dsrl import DSRLController
from steerable.control.training.dsrl import DSRLConfig
from steerable.control.training.noise_env import NoiseActionEnv
from steerable.errors import InputError
from steerable.provenance import provenance

Decode = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (obs [B, o], w [B, D]) -> a [B, D]
Sample = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # obs -> (w, log pi(w|obs))


class TwinQ(nn.Module):
    """Two critics Q_j(s, x) with x an action chunk (Q^A) or a noise (Q^W)."""

    def __init__(self, obs_dim: int, x_dim: int, width: int, layers: int, layer_norm: bool) -> None:
        super().__init__()
        self.q = nn.ModuleList([mlp(obs_dim + x_dim, width, layers, 1, layer_norm) for _ in range(2)])

    def forward(self, obs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """[2, B]: both critics."""
        sx = torch.cat([obs, x], -1)
        return torch.stack([q(sx).squeeze(-1) for q in self.q])


def td_target(
    qa_target: TwinQ, sample: Sample, decode: Decode, r: torch.Tensor, next_obs: torch.Tensor,
    terminated: torch.Tensor, gamma: float, alpha: float,
) -> torch.Tensor:  # fmt: skip
    """y = r + gamma (1 - terminated) [min_j Qbar^A_j(s', pi_dp(s', w')) - alpha log pi(w'|s')], w' ~ pi^W(s')."""
    with torch.no_grad():
        w2, logp2 = sample(next_obs)
        q2 = qa_target(next_obs, decode(next_obs, w2)).min(0).values
        return r + gamma * (1.0 - terminated) * (q2 - alpha * logp2)


def distill_target(qa: TwinQ, decode: Decode, obs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """[2, B]: Q^A_j(s, pi_dp(s, w)) for each head j, what noise head Q^W_j(s, w) regresses to (fresh noise w)."""
    with torch.no_grad():
        return qa(obs, decode(obs, w))


def distill_loss(qw: TwinQ, qa: TwinQ, decode: Decode, obs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_j mean_b (Q^W_j(s, w) - Q^A_j(s, pi_dp(s, w)))^2 / 2: each noise head on its own action head."""
    return 0.5 * ((qw(obs, w) - distill_target(qa, decode, obs, w)) ** 2).mean(1).sum()


def train_dsrl_na(cfg: DSRLConfig, progress: bool = True) -> dict:
    """DSRL-NA training; a success check every ``eval_every`` env steps; writes ``actor.pt`` and ``training.json``."""
    from steerable.control.evaluate import evaluate, summary
    from steerable.control.worlds.envs import make_env

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    p = DiffusionPolicy.load(cfg.policy)
    envs = [NoiseActionEnv(make_env(cfg.env), p, cfg.magnitude, cfg.reward_scale) for _ in range(cfg.envs)]
    for e in envs[1:]:
        e.proc = envs[0].proc
    obs_dim = envs[0].observation_space.shape[0]
    if obs_dim != p.obs_dim:
        raise InputError(
            f"{cfg.policy} was trained on {p.obs_dim}-dim observations, {cfg.env} has {obs_dim}: "
            "pass the env it was trained on"
        )
    d = int(np.prod(p.sample_shape))
    actor = NoiseActor(obs_dim, d, cfg.width, cfg.layers, cfg.magnitude)
    qa, qw = (TwinQ(obs_dim, d, cfg.width, cfg.layers, cfg.layer_norm) for _ in range(2))
    qa_target = TwinQ(obs_dim, d, cfg.width, cfg.layers, cfg.layer_norm)
    qa_target.load_state_dict(qa.state_dict())
    log_alpha = torch.tensor(float(np.log(cfg.alpha_init)), requires_grad=not cfg.alpha_fixed)
    opt_a, opt_qa, opt_qw = (torch.optim.Adam(m.parameters(), lr=cfg.lr) for m in (actor, qa, qw))
    opt_alpha = torch.optim.Adam([log_alpha], lr=cfg.alpha_lr or cfg.lr)

    def decode(obs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Model-unit chunks [B, H * act_dim] the noises decode to (one batched DDIM call)."""
        cond = torch.stack([p.condition(o[None]) for o in obs.numpy()])
        x = w.reshape(len(w), *p.sample_shape)
        return p.sample_rows(cond, [0] * len(w), envs[0].proc, x_init=x).reshape(len(w), -1)

    n = max(cfg.env_steps, 1000)
    buf = {
        "obs": np.zeros((n, obs_dim), np.float32), "a": np.zeros((n, d), np.float32),
        "r": np.zeros(n, np.float32), "next": np.zeros((n, obs_dim), np.float32), "term": np.zeros(n, np.float32),
    }  # fmt: skip
    size = ptr = 0
    stats: dict[str, float] = {}
    counts = {"critic_steps": 0, "distill_steps": 0}

    def sample_batch() -> tuple[torch.Tensor, ...]:
        idx = rng.integers(0, size, cfg.batch_size)
        return tuple(torch.as_tensor(buf[k][idx]) for k in ("obs", "a", "r", "next", "term"))

    def critic_step() -> None:
        s, a, r, s2, term = sample_batch()
        alpha = float(log_alpha.detach().exp())
        y = td_target(qa_target, actor, decode, r, s2, term, cfg.gamma, alpha)
        loss_qa = 0.5 * ((qa(s, a) - y) ** 2).sum(0).mean()
        opt_qa.zero_grad()
        loss_qa.backward()
        opt_qa.step()
        w, logp = actor(s)
        loss_pi = (alpha * logp - qw(s, w).min(0).values).mean()
        opt_a.zero_grad()
        loss_pi.backward()
        opt_a.step()
        if not cfg.alpha_fixed:
            loss_alpha = -(log_alpha * (logp.detach() + cfg.target_entropy)).mean()
            opt_alpha.zero_grad()
            loss_alpha.backward()
            opt_alpha.step()
        with torch.no_grad():
            for t, o in zip(qa_target.parameters(), qa.parameters(), strict=True):
                t.mul_(0.995).add_(0.005 * o)
            stats.update(
                alpha=alpha,
                entropy=float(-logp.mean()),
                q_data=float(qa(s, a).min(0).values.mean()),
                q_w_pi=float(qw(s, w).min(0).values.mean()),
                loss_qa=float(loss_qa),
            )

    def distill_step() -> None:
        s = sample_batch()[0]
        w = torch.randn(len(s), d)  # fresh base-policy noise, unclipped (as the authors)
        loss_qw = distill_loss(qw, qa, decode, s, w)
        opt_qw.zero_grad()
        loss_qw.backward()
        opt_qw.step()
        stats["loss_qw"] = float(loss_qw.detach())

    def train_call() -> None:
        """One call as the authors' ``train()``: the critic steps, then the distillation steps."""
        for _ in range(cfg.gradient_steps):
            critic_step()
        for _ in range(cfg.noise_critic_steps):
            distill_step()
        counts["critic_steps"] += cfg.gradient_steps
        counts["distill_steps"] += cfg.noise_critic_steps

    eval_env = make_env(cfg.env)
    curve: list[dict] = []
    t0 = time.perf_counter()
    outcomes: dict[str, int] = {}

    def steps() -> int:
        return sum(e.env_steps for e in envs)

    def check_now() -> None:
        eps = evaluate(eval_env, DSRLController(p, noise_policy=actor), cfg.eval_episodes, seed=10_000 + cfg.seed,
                       progress=False)  # fmt: skip
        row = summary("dsrl-na", 1, eps)
        curve.append(
            {
                "env_steps": steps(),
                **{k: row[k] for k in ("success", "return", "outcomes")},
                "train_outcomes": dict(sorted(outcomes.items())),
                "seconds": round(time.perf_counter() - t0, 1),
                **counts,
                **{k: round(v, 4) for k, v in stats.items()},
            }
        )
        outcomes.clear()
        if progress:
            print(curve[-1], file=sys.stderr, flush=True)

    obs = np.stack([e.reset(seed=cfg.seed + i)[0] for i, e in enumerate(envs)]).astype(np.float32)
    next_check = cfg.eval_every
    if cfg.eval_every:
        check_now()
    chunks = 0
    while steps() < cfg.env_steps:
        if steps() < cfg.learning_starts:
            w = np.clip(rng.normal(size=(len(envs), d)), -cfg.magnitude, cfg.magnitude).astype(np.float32)
        else:
            with torch.no_grad():
                w = actor(torch.as_tensor(obs))[0].numpy()
        with torch.no_grad():
            a = decode(torch.as_tensor(obs), torch.as_tensor(w))
        env_chunks = p.to_env(p.future(a.reshape(len(envs), *p.sample_shape)))
        for i, e in enumerate(envs):
            e.decoded = env_chunks[i]
            o2, r, term, trunc, info = e.step(w[i])
            j, ptr = ptr % n, ptr + 1
            buf["obs"][j], buf["a"][j], buf["r"][j], buf["next"][j], buf["term"][j] = obs[i], a[i], r, o2, term
            size = min(ptr, n)
            if term or trunc:
                k = str(info.get("outcome", "end"))
                outcomes[k] = outcomes.get(k, 0) + 1
                o2, _ = e.reset()
            obs[i] = o2
        chunks += len(envs)
        if steps() >= cfg.learning_starts:
            train_call()
        if cfg.eval_every and steps() >= next_check:
            next_check += cfg.eval_every
            check_now()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    shape = {"obs_dim": obs_dim, "w_dim": d, "width": cfg.width, "layers": cfg.layers, "magnitude": cfg.magnitude}
    torch.save({"shape": shape, "state": actor.state_dict()}, out / "actor.pt")
    record = {
        **provenance(cfg, "control dsrl"),
        "env_steps": steps(),
        "chunks": chunks,
        "nfe": envs[0].nfe,
        **counts,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "curve": curve,
        "final": {k: round(v, 4) for k, v in stats.items()},
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
