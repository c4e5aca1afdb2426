"""TD3+BC (Fujimoto & Gu, 2021) on real and policy-guided synthetic data: ``steerable control pgd``.

TD3+BC, as the PGD authors' ``rl/td3_bc.py`` runs it: a deterministic tanh actor and twin critics (two ReLU
layers of ``hidden``), observations standardised by the real data's mean/std; each step one actor update then
two critic updates, target networks Polyak-averaged (tau) before the step:

    actor loss   = -lambda * mean Q1(s, pi(s)) + mean (pi(s) - a)^2,   lambda = alpha / mean |Q1(s, pi(s))| (no grad)
    critic target y = r + gamma (1 - done) min(Q1', Q2')(s', clip(pi'(s') + clip(N(0, sigma), +-c), -1, 1))

The experiment (:func:`run_pgd`) trains one trajectory model (:mod:`steerable.control.training.pgd`) and then, from the
same seed, one agent per arm: ``real`` (batches of real transitions only), ``unguided`` (synthetic trajectories
sampled with no guidance, SynthER-style) and ``pgd`` (synthetic trajectories guided by the agent being trained).
In the synthetic arms each batch is ``synth_batch`` synthetic and the rest real transitions (the authors' 240 of
256), and the synthetic set is regenerated every ``lifetime`` agent steps from the current actor; the first set
is unguided in both arms (the authors' generator starts with no agent parameters). Each arm's agent is then
evaluated on the same seeded episodes.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from steerable.config import check, opt
from steerable.control.policies.normalize import ActionScale, ObsScale
from steerable.control.training.pgd import (
    EDM,
    ENCODINGS,
    PolicyGuide,
    TrajectoryLayout,
    Transitions,
    dynamics_residual,
    guidance_coefficients,
    read_transitions,
    sample_trajectories,
    terminal_consistency,
    trajectory_windows,
)
from steerable.control.training.td3bc import TD3BC, AgentController, TD3BCConfig, TransitionSampler
from steerable.control.worlds.data import DataConfig, Dataset, make_dataset
from steerable.control.worlds.envs import make_env
from steerable.diffusion.denoiser import MLPDenoiser
from steerable.errors import ConfigError
from steerable.streams import mix

ARMS = ("real", "unguided", "pgd")


@dataclass(frozen=True)
class PGDConfig:
    """How ``steerable control pgd`` trains the trajectory model and the TD3+BC arms (the CLI's flags)."""

    data: str | None = opt(None, "Dataset .npz (default: the scripted planner's 400 episodes, seed 0, made in memory).")
    env: str = opt("builtin:pointnav", "The env the data came from and the agents are evaluated in.")
    out: str | None = opt(None, "Directory for the trajectory model and results.json (reused when it matches).")
    arms: str = opt("real,unguided,pgd", "Comma-separated arms to train: real, unguided, pgd.", min_len=1)
    length: int = opt(16, "Transitions per synthetic sub-trajectory.", ge=1, le=128)
    stride: int = opt(2, "Steps between the starts of training windows.", ge=1, le=128)
    encoding: str = opt("delta", "Observations as delta (row 0's, then differences) or absolute (the authors').")
    pad_terminal: bool = opt(True, "Continue terminated episodes by absorbing rows (terminals keep their share).")
    starts: str = opt("sampled", "First observations: sampled with the rest (the authors') or inpainted real ones.")
    diffusion_steps: int = opt(4000, "Gradient steps of the trajectory model.", ge=1, le=10_000_000)
    diffusion_hidden: int = opt(256, "Trajectory denoiser width.", ge=8, le=4096)
    diffusion_layers: int = opt(3, "Trajectory denoiser hidden layers.", ge=1, le=8)
    diffusion_lr: float = opt(1e-3, "Peak AdamW learning rate of the trajectory model (cosine to 1%).", gt=0, le=1)
    sample_steps: int = opt(64, "EDM sampling steps (2 NFE each but the last).", ge=2, le=1024)
    guidance: float = opt(0.05, "Policy guidance coefficient (the authors' default is 0: unguided).", ge=0, le=100)
    cosine: float = opt(0.3, "Cosine term of the guidance schedule.", ge=0, le=10)
    guidance_delay: int = opt(0, "Sampling steps before guidance starts.", ge=0, le=1024)
    normalise_guidance: bool = opt(False, "Divide the guidance by its norm over each trajectory.")
    synth_trajectories: int = opt(512, "Trajectories sampled per regeneration.", ge=1, le=1_000_000)
    lifetime: int = opt(1500, "Agent steps between regenerations of the synthetic set.", ge=1, le=10_000_000)
    agent_steps: int = opt(6000, "TD3+BC steps per arm.", ge=1, le=10_000_000)
    batch: int = opt(256, "Transitions per TD3+BC batch.", ge=2, le=65_536)
    synth_batch: int = opt(240, "Of which synthetic (synthetic arms).", ge=1, le=65_536)
    hidden: int = opt(256, "Actor and critic width.", ge=8, le=4096)
    lr: float = opt(3e-4, "Adam learning rate of actor and critics.", gt=0, le=1)
    alpha: float = opt(2.5, "TD3+BC's alpha (weight of Q against BC).", ge=0, le=1000)
    gamma: float = opt(0.99, "Discount.", gt=0, lt=1)
    tau: float = opt(0.005, "Polyak step of the target networks.", gt=0, le=1)
    policy_noise: float = opt(0.2, "Target policy smoothing noise std.", ge=0, le=10)
    noise_clip: float = opt(0.5, "Target policy smoothing noise clip.", ge=0, le=10)
    episodes: int = opt(200, "Evaluation episodes per arm (the same seeded starts for every arm).", ge=1, le=100_000)
    seed: int = opt(0, "Seed (data order, networks, sampling; evaluation episodes).", ge=0)
    threads: int = opt(1, "torch threads.", ge=1, le=256)

    def __post_init__(self) -> None:
        check(self, "pgd: ")
        bad = [a for a in self.arm_list if a not in ARMS]
        if bad or not self.arm_list:
            raise ConfigError(f"pgd: --arms takes a comma-separated subset of {','.join(ARMS)} (got {self.arms!r})")
        if self.synth_batch >= self.batch:
            raise ConfigError(f"pgd: synth-batch must be < batch (got {self.synth_batch} >= {self.batch})")
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"pgd: --encoding takes one of {', '.join(ENCODINGS)} (got {self.encoding!r})")
        if self.starts not in ("sampled", "real"):
            raise ConfigError(f"pgd: --starts takes sampled or real (got {self.starts!r})")
        if self.guidance_delay >= self.sample_steps:
            raise ConfigError(f"pgd: guidance-delay must be < sample-steps (got {self.guidance_delay})")

    @property
    def arm_list(self) -> list[str]:
        return [a.strip() for a in self.arms.split(",") if a.strip()]


# ---------------------------------------------------------------- the experiment
def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_trajectory_model(cfg: PGDConfig, windows: np.ndarray, layout: TrajectoryLayout) -> tuple[MLPDenoiser, dict]:
    """EDM's loss on standardised windows, AdamW with cosine decay to 1%, ``cfg.diffusion_steps`` steps."""
    torch.manual_seed(cfg.seed)
    model = MLPDenoiser(
        sample_shape=windows.shape[1:], hidden=cfg.diffusion_hidden, layers=cfg.diffusion_layers, time_dim=64
    )
    x = layout.standardise(torch.as_tensor(windows))
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.diffusion_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: 0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * min(s / cfg.diffusion_steps, 1)))
    )
    g, edm, ema, t0 = torch.Generator().manual_seed(cfg.seed), EDM(), None, time.perf_counter()
    for step in range(1, cfg.diffusion_steps + 1):
        loss = edm.loss(model, x[torch.randint(len(x), (256,), generator=g)], g)
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step()
        ema = loss.item() if ema is None else 0.99 * ema + 0.01 * loss.item()
        if step % 1000 == 0 or step == cfg.diffusion_steps:
            _log(f"pgd: trajectory model {step}/{cfg.diffusion_steps} steps, loss {ema:.4f}")
    return model.eval(), {"steps": cfg.diffusion_steps, "final_loss_ema": round(ema, 5),
                          "wall_seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def _model_key(cfg: PGDConfig, data: Dataset) -> dict:
    """What the trajectory model is a function of: its settings and the data's contents (not just its path)."""
    keys = ("env", "length", "stride", "encoding", "pad_terminal", "diffusion_steps", "diffusion_hidden",
            "diffusion_layers", "diffusion_lr", "seed")  # fmt: skip
    digest = hashlib.sha1()
    for col in (data.obs, data.action, data.reward, data.next_obs, data.terminated, data.episode):
        digest.update(np.ascontiguousarray(col).tobytes())
    return {k: getattr(cfg, k) for k in keys} | {"data_sha1": digest.hexdigest()}


def load_or_train_model(cfg: PGDConfig, data: Dataset) -> tuple[MLPDenoiser, TrajectoryLayout, dict]:
    """The trajectory model and its layout in ``out/trajectory_model`` when made with the same settings and data,
    else new ones (written there)."""
    where = Path(cfg.out) / "trajectory_model" if cfg.out else None
    if where is not None and (where / "made.json").exists():
        made = json.loads((where / "made.json").read_text())
        if made.get("key") == _model_key(cfg, data) and "layout" in made:
            _log(f"pgd: reusing the trajectory model in {where}")
            layout = TrajectoryLayout(**{k: tuple(v) if isinstance(v, list) else v for k, v in made["layout"].items()})
            return MLPDenoiser.from_pretrained(where).eval(), layout, made["record"]
    windows = trajectory_windows(data, cfg.length, cfg.stride, cfg.pad_terminal)
    layout = TrajectoryLayout.fit(windows, data.obs.shape[1], cfg.encoding)
    _log(f"pgd: {len(windows)} training windows of {cfg.length} transitions ({cfg.encoding} observations)")
    model, record = train_trajectory_model(cfg, windows, layout)
    record["windows"] = len(windows)
    if where is not None:
        model.save_pretrained(where)
        made = {"key": _model_key(cfg, data), "record": record, "layout": asdict(layout)}
        (where / "made.json").write_text(json.dumps(made))
    return model, layout, record


def synthesize(cfg, model, layout, agent, guided: bool, seed: int, low, high, real=None) -> tuple[Transitions, dict]:
    """One synthetic set: ``cfg.synth_trajectories`` trajectories from ``seed``, guided by ``agent`` when
    ``guided``; with ``cfg.starts == "real"`` each starts from a real observation drawn (from ``seed``) out of
    ``real``."""
    starts = None
    if cfg.starts == "real":
        starts = real.obs[np.random.default_rng(seed).integers(len(real), size=cfg.synth_trajectories)]
    guide, coefs = None, None
    if guided and cfg.guidance > 0:
        guide = PolicyGuide(lambda o: agent.pi(o), agent.action_scale.normalize, cfg.normalise_guidance)
        coefs = guidance_coefficients(cfg.guidance, cfg.sample_steps, cfg.cosine, cfg.guidance_delay)
    traj, stats = sample_trajectories(model, layout, cfg.synth_trajectories, cfg.length, cfg.sample_steps, seed,
                                      guide=guide, coefficients=coefs, starts=starts)  # fmt: skip
    t = read_transitions(traj, layout, low, high)
    info = {"guided_steps": stats.guided_steps, "mean_shift": round(stats.mean_shift, 5), "nfe": stats.nfe}
    return t, info | {
        "reward_mean": round(float(t.reward.mean()), 4),
        "terminal_share": round(float(t.terminated.mean()), 4),
    }


def _on_policy_gap(agent: TD3BC, t: Transitions) -> float:
    """Mean squared distance, in [-1, 1] units, between the data's actions and the agent's at the same states."""
    with torch.no_grad():
        a = agent.action_scale.normalize(torch.as_tensor(t.action))
        return round(float(((agent.pi(torch.as_tensor(t.obs)) - a) ** 2).sum(-1).mean()), 4)


def _consistency(t: Transitions, env_name: str) -> dict:
    """PointNav's terminal rule against ``t`` (empty for an env without obstacles and a goal radius)."""
    env = make_env(env_name)
    env = getattr(env, "unwrapped", env)
    if not hasattr(env, "collides") or not hasattr(getattr(env, "config", None), "goal_radius"):
        return {}
    return terminal_consistency(t, env.collides, env.config.goal_radius)


def train_arm(cfg, arm, real, model, layout, obs_scale, action_scale, low, high) -> tuple[TD3BC, dict]:
    torch.manual_seed(cfg.seed)  # every arm's networks start the same
    agent = TD3BC(obs_scale, action_scale, TD3BCConfig.of(cfg))
    g = torch.Generator().manual_seed(cfg.seed + 1)
    real_s = TransitionSampler(real, action_scale)
    synth_s, regen, synth, t0 = None, [], None, time.perf_counter()
    for step in range(cfg.agent_steps):
        if arm != "real" and step % cfg.lifetime == 0:
            guided = arm == "pgd" and step > 0  # the first set is unguided (the authors start with no agent)
            synth, info = synthesize(cfg, model, layout, agent, guided, mix(cfg.seed, 2, step), low, high, real)
            synth_s = TransitionSampler(synth, action_scale)
            info |= {"step": step, "on_policy_gap": _on_policy_gap(agent, synth)}
            if layout.obs_dim == 6:
                info["dynamics_residual"] = dynamics_residual(synth)
                info["terminal_consistency"] = _consistency(synth, cfg.env)
            regen.append(info)
            _log(f"pgd[{arm}]: synthetic set at step {step}: {json.dumps(info)}")
        if synth_s is None:
            b = real_s.batch(cfg.batch, g)
        else:
            rb, sb = real_s.batch(cfg.batch - cfg.synth_batch, g), synth_s.batch(cfg.synth_batch, g)
            b = {k: torch.cat([rb[k], sb[k]]) for k in rb}
        losses = agent.update(b)
        if (step + 1) % 2000 == 0 or step + 1 == cfg.agent_steps:
            _log(
                f"pgd[{arm}]: {step + 1}/{cfg.agent_steps} steps, "
                + ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
            )
    record = {"steps": cfg.agent_steps, "wall_seconds": round(time.perf_counter() - t0, 1), "synthetic_sets": regen}
    if synth is not None:  # how on-policy the last synthetic set is for the final agent, against the real data
        record["final_on_policy_gap"] = {"synthetic": _on_policy_gap(agent, synth), "real": _on_policy_gap(agent, real)}
    return agent, record


def run_pgd(cfg: PGDConfig) -> dict:
    """Train the trajectory model, then each arm's TD3+BC, and evaluate every arm on the same episodes."""
    from steerable.control.evaluate import evaluate, summary

    torch.set_num_threads(cfg.threads)
    env = make_env(cfg.env)
    if cfg.data:
        data = Dataset.load(cfg.data)
    else:
        data = make_dataset(DataConfig(out="-", env=cfg.env, episodes=400, seed=0))
    if data.obs.shape[1] != env.observation_space.shape[0]:
        raise ConfigError(f"pgd: the data has {data.obs.shape[1]}-dim observations, {cfg.env} has "
                          f"{env.observation_space.shape[0]}: pass the env the data came from with --env")  # fmt: skip
    action_scale = ActionScale.from_space(env.action_space)
    low, high = np.asarray(action_scale.low, np.float32), np.asarray(action_scale.high, np.float32)
    model, layout, model_record = load_or_train_model(cfg, data)
    real = Transitions.from_dataset(data)
    obs_scale = ObsScale.fit(data.obs)
    result: dict = {"config": asdict(cfg), "trajectory_model": model_record, "real_transitions": len(real), "arms": {}}
    if layout.obs_dim == 6:
        result["real_dynamics_residual"] = dynamics_residual(real)
        result["real_terminal_consistency"] = _consistency(real, cfg.env)
    for arm in cfg.arm_list:
        agent, record = train_arm(cfg, arm, real, model, layout, obs_scale, action_scale, low, high)
        eps = evaluate(
            make_env(cfg.env), AgentController(agent, f"td3bc-{arm}"), cfg.episodes, cfg.seed, progress=False
        )
        row = summary(f"td3bc-{arm}", 0, eps)
        _log(f"pgd[{arm}]: success {row['success']:.3f} return {row['return']:.3f} outcomes {row['outcomes']}")
        result["arms"][arm] = {k: row[k] for k in ("success", "success_se", "return", "outcomes")} | record
    if cfg.out:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "results.json").write_text(json.dumps(result, indent=1))
    return result
