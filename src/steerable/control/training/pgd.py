"""Policy-guided diffusion (Jackson, Matthews, Lu et al., "Policy-Guided Diffusion", RLC 2024; code in
EmptyJackson/policy-guided-diffusion, JAX): a trajectory diffusion model of the offline data, steered while it
samples by the target policy's action likelihood, so its synthetic trajectories are roughly on-policy and still
follow the data's dynamics.

The model is EDM (Karras et al. 2022) over whole sub-trajectories: ``length + 1`` rows of
(obs, action, reward, terminated), each column standardised by its mean/std over the training windows
(observations after row 0 as differences, see :class:`TrajectoryLayout`); transition t of a
sample is (obs_t, a_t, r_t, done_t, obs_{t+1}). Windows never cross episodes; a terminated episode's last
window ends on its terminal transition (its next observation is the extra row), as the authors add
terminal-ending windows. Training is EDM's preconditioned denoiser loss (log-normal sigma, P_mean -1.2,
P_std 1.2, sigma_data 1); sampling is EDM's stochastic Heun sampler (rho 7, sigma in [0.002, 80], S_churn 80)
run as the diffusion room's :class:`~steerable.diffusion.edm.EDMProcess` (diffusers' EDM schedule and
preconditioning), every trajectory on its own noise stream.

Guidance, before each denoising step i of n, moves the action columns of the current (noisy) sample:

    a <- a + lambda_i * grad_a log pi(a | s),
    lambda_i = coeff * [(1 - i/n) + cosine * sin(pi (i + 1) / n)]  for delay <= i < n - 1, else 0,

with s the same sample's (noisy) observation columns. For a deterministic actor mu (TD3+BC) pi is the
unit-variance Gaussian N(mu(s), I), as the authors' ``det_guidance``, so grad_a log pi = mu(s) - a in the
actor's [-1, 1] units, times d(unit)/d(column) by the chain rule.

Where it differs from the authors' code, and why:
- **The guidance coefficient defaults to 0.05, not 0.** The authors' ``--policy_guidance_coeff`` defaults to
  0.0, so their default run is unguided synthetic data (SynthER-style); here guidance is on unless
  ``--guidance 0`` is passed (that is the unguided arm of the measurement). The cosine coefficient keeps their
  default 0.3, and like their CLI (``--normalize_action_guidance`` is store_true) the gradient is not
  normalised unless asked; when asked, it is divided by (its norm over the whole trajectory + 1e-8): the
  authors add the 1e-8 after the division, so a zero gradient gives NaN there.
- Actions are diffused as they are (standardised) and clipped to the env's bounds when the sample is read;
  the authors diffuse arctanh(action) and apply tanh when reading and before the log-prob. That tanh is not a
  double squashing (their dataset stores arctanh of the actions), but here the planner's actions sit exactly
  on the bounds often, where arctanh(0.999) = 3.8 makes spiky columns a small MLP fits poorly.
- The denoiser is the diffusion room's MLPDenoiser over the flattened trajectory (theirs is a 1-D U-Net with
  1024 features); its time input is 250 * log(sigma) (EDM's c_noise = log(sigma) / 4, times 1000, so the
  sinusoidal embedding's frequencies span it as they span DDPM's timesteps).
- The Euler predictor starts from the churned sample x_hat (EDM's Algorithm 2); the authors' starts from the
  sample before the churn noise was added while their Heun corrector uses x_hat.
- Each trajectory's noise comes from its own counter-based stream (the diffusion room's convention), not one
  generator for the batch.
- CPU sizes: 64 sampling steps (theirs 256), sub-trajectories of 16 transitions (theirs 32).
- Observations are diffused as differences by default (``encoding="delta"``: row 0's observation, then
  obs_t - obs_{t-1}, each column standardised over the windows); the authors diffuse every row's
  observation standardised (``"absolute"``). A PointNav step is 4% of a position std, and with the absolute
  layout this MLP's synthetic steps came out 5.7x too long.
- Terminated episodes are continued by absorbing rows (``pad_terminal``: last observation, action 0, reward
  0, done 1) and windowed up to their last transition; a sample is cut after its first terminal. The
  authors' windows hold a terminal only in the one window ending on it, so at stride 2 and 16 transitions
  terminals are a sixth of their share of the data even before the model's error.
- ``starts`` (off unless ``--starts real``) inpaints each trajectory's first observation with a real one; the
  authors sample whole trajectories.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from steerable.control.worlds.data import Dataset
from steerable.diffusion.denoiser import MLPDenoiser
from steerable.diffusion.edm import EDMProcess, edm_denoise, edm_scheduler
from steerable.errors import InputError
from steerable.streams import gaussian, stream

# ---------------------------------------------------------------- the data as trajectories
ENCODINGS = ("absolute", "delta")


@dataclass(frozen=True)
class TrajectoryLayout:
    """Columns of a trajectory row (obs, action, reward, terminated), how the observations are encoded, and
    each encoded column's mean/std over the training windows.

    ``absolute`` encodes row t's observation as it is (the authors'); ``delta`` keeps row 0's observation and
    encodes every later row's as obs_t - obs_{t-1}, so a step (PointNav: 0.04 of a position std) is a column
    of its own scale instead of a difference of two columns the model must get right to 4% of their std.
    ``mean``/``std`` are per column (rows >= 1 in delta: the obs columns are then the differences'),
    ``first_mean``/``first_std`` row 0's observation columns in delta (empty in absolute)."""

    obs_dim: int
    act_dim: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    encoding: str = "absolute"
    first_mean: tuple[float, ...] = ()
    first_std: tuple[float, ...] = ()

    @property
    def width(self) -> int:
        return self.obs_dim + self.act_dim + 2

    @property
    def act(self) -> slice:
        return slice(self.obs_dim, self.obs_dim + self.act_dim)

    @classmethod
    def fit(cls, windows: np.ndarray, obs_dim: int, encoding: str = "absolute") -> TrajectoryLayout:
        """Per-column mean/std (std floored at 1e-3) of windows ``[n, length + 1, width]`` in data units, as the
        authors normalise each dimension over their sub-trajectories; the last row's placeholder action, reward
        and flag are left out."""
        if encoding not in ENCODINGS:
            raise InputError(f"pgd: encoding must be one of {', '.join(ENCODINGS)} (got {encoding!r})")
        enc = _encode(np.asarray(windows, np.float32), obs_dim, encoding)
        rows = enc[:, 1:] if encoding == "delta" else enc
        obs = rows[..., :obs_dim].reshape(-1, obs_dim)
        rest = enc[:, :-1, obs_dim:].reshape(-1, enc.shape[2] - obs_dim)
        mean, std = np.r_[obs.mean(0), rest.mean(0)], np.r_[obs.std(0), rest.std(0)]
        first = enc[:, 0, :obs_dim] if encoding == "delta" else np.zeros((1, 0))
        floor = lambda v: tuple(float(max(x, 1e-3)) for x in v)  # noqa: E731
        return cls(obs_dim, enc.shape[2] - obs_dim - 2, tuple(map(float, mean)), floor(std), encoding,
                   tuple(map(float, first.mean(0))), floor(first.std(0)))  # fmt: skip

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean, std ``[length + 1, width]`` for trajectories shaped like ``x``."""
        mean = torch.tensor(self.mean, dtype=x.dtype).expand(x.shape[-2], -1).clone()
        std = torch.tensor(self.std, dtype=x.dtype).expand(x.shape[-2], -1).clone()
        if self.encoding == "delta":
            mean[0, : self.obs_dim] = torch.tensor(self.first_mean, dtype=x.dtype)
            std[0, : self.obs_dim] = torch.tensor(self.first_std, dtype=x.dtype)
        return mean, std

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """Trajectories in data units -> the model's space (encoded, then standardised per column)."""
        mean, std = self._stats(x)
        return (_encode(x, self.obs_dim, self.encoding) - mean) / std

    def unstandardise(self, x: torch.Tensor) -> torch.Tensor:
        """The model's space -> trajectories in data units (the inverse of :meth:`standardise`)."""
        mean, std = self._stats(x)
        return _decode(x * std + mean, self.obs_dim, self.encoding)


def _encode(x, obs_dim: int, encoding: str):
    """[..., rows, width] in data units -> encoded: in delta, rows >= 1 hold obs_t - obs_{t-1}."""
    if encoding == "absolute":
        return x
    out = x.clone() if isinstance(x, torch.Tensor) else x.copy()
    out[..., 1:, :obs_dim] = x[..., 1:, :obs_dim] - x[..., :-1, :obs_dim]
    return out


def _decode(x: torch.Tensor, obs_dim: int, encoding: str) -> torch.Tensor:
    """The inverse of :func:`_encode`: obs_t = obs_0 + the sum of the differences up to t."""
    if encoding == "absolute":
        return x
    return torch.cat([x[..., :obs_dim].cumsum(-2), x[..., obs_dim:]], -1)


def _rows(obs, action, reward, terminated) -> np.ndarray:
    return np.concatenate([obs, action, reward[:, None], terminated[:, None].astype(np.float32)], 1).astype(np.float32)


def trajectory_windows(data: Dataset, length: int, stride: int = 1, pad_terminal: bool = False) -> np.ndarray:
    """Sub-trajectories ``[windows, length + 1, width]`` in data units: rows t = 0..length-1 are transitions
    (obs_t, a_t, r_t, done_t); row ``length`` holds obs_{length} (action, reward, done set to 0, never read).
    Windows start every ``stride`` steps inside an episode, plus one ending on each episode's last transition;
    episodes shorter than ``length`` give none.

    ``pad_terminal``: a terminated episode is continued past its terminal transition by absorbing rows (its
    last next observation, action 0, reward 0, done 1) and its windows start every ``stride`` steps up to its
    last transition, so the terminal transition sits in as many windows as any other (without padding it is
    in one, an eighth of its share at stride 2, length 16); :func:`read_transitions` cuts a trajectory after
    its first terminal transition."""
    out = []
    for sl in data.episode_slices():
        n = sl.stop - sl.start
        pad = pad_terminal and bool(data.terminated[sl][-1])
        if n < length and not pad:
            continue
        rows = _rows(data.obs[sl], data.action[sl], data.reward[sl], data.terminated[sl])
        last = np.zeros((length if pad else 1, rows.shape[1]), np.float32)
        last[:, : data.obs.shape[1]] = data.next_obs[sl][-1]
        last[:, -1] = float(pad)  # absorbing rows stay terminal
        seq = np.concatenate([rows, last])
        starts = range(0, n, stride) if pad else sorted(set(range(0, n - length + 1, stride)) | {n - length})
        for s in starts:
            out.append(seq[s : s + length + 1])
    if not out:
        raise InputError(f"pgd: no episode has {length} transitions: pass a smaller --length")
    return np.stack(out)


@dataclass(frozen=True)
class Transitions:
    """Flat transitions read from trajectories (real or synthetic), in env units."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray

    def __len__(self) -> int:
        return len(self.obs)

    @classmethod
    def from_dataset(cls, data: Dataset) -> Transitions:
        return cls(data.obs, data.action, data.reward, data.next_obs, data.terminated.astype(bool))


def read_transitions(traj: torch.Tensor, layout: TrajectoryLayout, low: np.ndarray, high: np.ndarray) -> Transitions:
    """Transitions of trajectories ``[n, length + 1, width]`` in data units: obs_{t+1} is transition t's next
    observation; actions clipped to [low, high]; done when the sampled flag exceeds 0.5 (as the authors). A
    trajectory ends at its first terminal transition: what follows it is dropped (no state follows a terminal;
    in padded training windows those rows are absorbing padding)."""
    x = traj.detach().numpy()
    o, a = layout.obs_dim, layout.act
    done = x[:, :-1, -1] > 0.5  # [n, length]
    keep = (np.cumsum(done, 1) - done) == 0  # at or before the first terminal
    return Transitions(
        obs=x[:, :-1, :o][keep].astype(np.float32),
        action=np.clip(x[:, :-1, a][keep], low, high).astype(np.float32),
        reward=x[:, :-1, -2][keep].astype(np.float32),
        next_obs=x[:, 1:, :o][keep].astype(np.float32),
        terminated=done[keep],
    )


# ---------------------------------------------------------------- EDM training
@dataclass(frozen=True)
class EDM:
    """EDM's training noise (the authors' defaults); the preconditioning is the sampler's
    (:func:`steerable.diffusion.edm.edm_denoise`), so the model is trained and sampled with one D."""

    sigma_data: float = 1.0
    p_mean: float = -1.2
    p_std: float = 1.2

    def loss(self, model: MLPDenoiser, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """lambda(sigma) ||D(x0 + sigma n; sigma) - x0||^2 with ln sigma ~ N(P_mean, P_std^2),
        lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2."""
        sigma = torch.exp(self.p_mean + self.p_std * torch.randn(x0.shape[0], generator=generator))
        s = sigma.view(-1, *([1] * (x0.ndim - 1)))
        noised = x0 + s * torch.randn(x0.shape, generator=generator)
        weight = (s**2 + self.sigma_data**2) / (s * self.sigma_data) ** 2
        return (weight * (edm_denoise(self._scheduler, model, noised, sigma) - x0) ** 2).mean()

    @property
    def _scheduler(self):
        return _scheduler(self.sigma_data)


@functools.cache
def _scheduler(sigma_data: float):
    return edm_scheduler(sigma_data=sigma_data)


# ---------------------------------------------------------------- guidance
def guidance_coefficients(coeff: float, steps: int, cosine: float = 0.3, delay: int = 0) -> list[float]:
    """lambda_i = coeff [(1 - i/n) + cosine sin(pi (i+1)/n)] for delay <= i < n - 1, else 0 (none on the last)."""
    return [
        coeff * ((1 - i / steps) + cosine * math.sin(math.pi * (i + 1) / steps)) if delay <= i < steps - 1 else 0.0
        for i in range(steps)
    ]


@dataclass
class PolicyGuide:
    """grad of log N(a; mu(s), I) w.r.t. a trajectory's standardised action columns, ``mu`` the target actor
    (obs in env units -> action in the actor's [-1, 1] units; ``to_unit`` maps env actions to those units)."""

    actor: Callable[[torch.Tensor], torch.Tensor]
    to_unit: Callable[[torch.Tensor], torch.Tensor]
    normalise: bool = False

    def grad(self, x: torch.Tensor, layout: TrajectoryLayout) -> torch.Tensor:
        """[n, rows, act_dim]: d/d(action columns) of sum_t log N(a_t; mu(s_t), I), s_t the sample's own obs."""
        env = layout.unstandardise(x.detach())
        with torch.no_grad():
            mu = self.actor(env[..., : layout.obs_dim].reshape(-1, layout.obs_dim)).reshape(*x.shape[:-1], -1)
        cols = x[..., layout.act].detach().clone().requires_grad_(True)
        a_env = cols * torch.tensor(layout.std[layout.act], dtype=x.dtype) + torch.tensor(
            layout.mean[layout.act], dtype=x.dtype
        )
        logp = -0.5 * ((self.to_unit(a_env) - mu) ** 2).sum()
        (g,) = torch.autograd.grad(logp, cols)
        if self.normalise:
            g = g / (g.flatten(1).norm(dim=1).view(-1, 1, 1) + 1e-8)
        return g


# ---------------------------------------------------------------- sampling
@dataclass(frozen=True)
class SampleStats:
    nfe: int  # denoiser evaluations per trajectory (read from the sampler's usage)
    guided_steps: int  # steps whose lambda_i > 0 (guidance fired)
    mean_shift: float  # mean |lambda_i g| over guided action entries (standardised units), 0 when unguided


def sample_trajectories(
    model: MLPDenoiser,
    layout: TrajectoryLayout,
    n: int,
    length: int,
    steps: int,
    seed: int,
    guide: PolicyGuide | None = None,
    coefficients: list[float] | None = None,
    starts: np.ndarray | None = None,
) -> tuple[torch.Tensor, SampleStats]:
    """n trajectories ``[n, length + 1, width]`` in data units by EDM's stochastic Heun sampler (the diffusion
    room's :class:`~steerable.diffusion.edm.EDMProcess`, row r on its own noise stream from ``seed``), each step's
    action columns first moved by ``coefficients[i] * guide.grad`` when a guide is given.

    ``starts`` ``[n, obs_dim]`` (data units): each trajectory's first observation is inpainted by replacement
    (before step i, row 0's observation columns are set to the start's, standardised, plus sigma_i times noise
    from the row's stream; exactly the start at the end), so the model samples p(trajectory | s_0)."""
    fired: list[float] = []
    o = layout.obs_dim
    process = EDMProcess(model, steps, (length + 1, layout.width))
    if starts is not None:
        known = torch.zeros(n, length + 1, layout.width)
        known[:, 0, :o] = torch.as_tensor(starts, dtype=torch.float32)
        known = layout.standardise(known)[:, 0, :o]  # [n, obs_dim]; row 0 is encoded as it is
        rows = torch.tensor([stream(seed, r) for r in range(n)], dtype=torch.long)

    def hook(x: torch.Tensor, i: int) -> torch.Tensor:
        if starts is not None:
            x = x.clone()
            x[:, 0, :o] = known + process.sigmas[i] * gaussian(rows, _INPAINT + i, o).to(x.dtype)
        lam = coefficients[i] if coefficients is not None else 0.0
        if guide is None or lam == 0.0:
            return x
        step = lam * guide.grad(x, layout)
        x = x.clone()
        x[..., layout.act] += step
        fired.append(float(step.abs().mean()))
        return x

    process.guidance = hook if (guide is not None or starts is not None) else None
    state = process.init(None, n, seed)
    while not all(process.is_terminal(state)):
        process.propose(state)
    if starts is not None:
        state.x[:, 0, :o] = known
    stats = SampleStats(process.usage.nfe // n, len(fired), float(np.mean(fired)) if fired else 0.0)
    return layout.unstandardise(state.x), stats


_INPAINT = 1 << 20  # stream counters of the inpainting noise (x_T uses -1, step i's churn i)


# ---------------------------------------------------------------- how well transitions follow the dynamics
def dynamics_residual(t: Transitions, dt: float = 0.1, damping: float = 0.98) -> dict[str, float]:
    """PointNav's noiseless step v' = damping v + dt a, p' = p + dt v' against each transition: mean |error| of
    the next velocity and next position, and of the goal (constant within an episode). Real data is not 0: the
    unobserved wind and gusts add dt * (wind + gust) to v'."""
    p, v, goal = t.obs[:, :2], t.obs[:, 2:4], t.obs[:, 4:6]
    v_pred = damping * v + dt * t.action
    dv = np.abs(t.next_obs[:, 2:4] - v_pred).mean()
    dp = np.abs(t.next_obs[:, :2] - (p + dt * t.next_obs[:, 2:4])).mean()
    dg = np.abs(t.next_obs[:, 4:6] - goal).mean()
    return {"velocity": round(float(dv), 4), "position": round(float(dp), 4), "goal": round(float(dg), 4)}


def terminal_consistency(t: Transitions, collides: Callable[[np.ndarray], np.ndarray], goal_radius: float) -> dict:
    """PointNav's terminal rule against each transition: ``missed`` the share whose next position is in an
    obstacle, outside the arena or within ``goal_radius`` of the goal with no terminal flag (a synthetic step
    through a wall), ``false`` the share flagged terminal with none of these. Real data: both 0."""
    p = t.next_obs[:, :2].astype(np.float64)
    event = collides(p) | (np.linalg.norm(p - t.next_obs[:, 4:6], axis=1) < goal_radius)
    return {"missed": round(float((event & ~t.terminated).mean()), 4),
            "false": round(float((t.terminated & ~event).mean()), 4)}  # fmt: skip
