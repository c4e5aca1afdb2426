"""A chunked-action diffusion policy (Chi et al., "Diffusion Policy"), trained by behaviour cloning.

The policy denoises an action chunk a_{t:t+H} (H = ``horizon``, normalised
to [-1, 1] by the env's bounds) conditioned on the observation and,
optionally, ``history`` earlier observations ``stride`` steps apart. With
``past`` > 0 it also predicts ``past`` earlier actions, ``stride`` apart like
the frames (a_{t - P*stride}, ..., a_{t - stride}), in the same sample as the
chunk (past-token prediction, Torne et al.); only the last H rows are
executed. ``execute`` actions of
each chunk are run before the policy is asked again.

The denoiser is the diffusion room's :class:`~steerable.diffusion.denoiser.MLPDenoiser`
(a diffusers model) and sampling is the room's
:class:`~steerable.diffusion.process.DiffusionProcess` (DDIM over diffusers'
scheduler; ``eta=0`` by default, so a chunk is a deterministic function of
its initial noise, which DSRL needs). Training is DDPM's epsilon loss over
100 timesteps of the cosine schedule, one plain torch loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from steerable.control.policies.normalize import ActionScale, ObsScale
from steerable.diffusion.process import DiffusionProcess, DiffusionState
from steerable.errors import InputError
from steerable.streams import gaussian, stream
from steerable.usage import Usage

TRAIN_TIMESTEPS = 100


@dataclass(frozen=True, eq=False)
class RowConditions:
    """The condition of a batch of chunk queries: each row's observation condition and noise stream (rows are
    queries of different episodes, so each brings its own stream), optionally its x_T and the steps already done."""

    condition: torch.Tensor  # [rows, dim] the policy's normalised observation frames
    streams: tuple[int, ...]  # each row's noise stream
    x_init: torch.Tensor | None = None  # [rows, past+H, act_dim] x_T given (a warm start, a chosen noise)
    start: int = 0  # denoising steps already done (a warm start's)


@dataclass
class RowConditionedProcess(DiffusionProcess):
    """The diffusion room's process with one condition per row (``Process[RowConditions]``): a batch of
    episodes, each at its own observation, denoises in one denoiser call per step."""

    def init(self, cond: RowConditions, n: int, seed: int | None = None) -> DiffusionState:
        """One row per stream of ``cond``: x_T from the row's own stream (so a row's sample never depends on its
        batch-mates) unless ``cond.x_init`` gives it. The streams are the seed: ``seed`` must be None."""
        if n != len(cond.streams) or n != len(cond.condition):
            raise InputError(f"{n} rows asked for {len(cond.streams)} streams and {len(cond.condition)} conditions")
        if seed is not None:
            raise InputError("each row of a chunk query brings its own stream: pass seed=None")
        st = torch.tensor(cond.streams, dtype=torch.long)
        dims = self.sample_shape[0] * self.sample_shape[1]
        x = gaussian(st, -1, dims).float().reshape(n, *self.sample_shape) * self.scheduler.init_noise_sigma
        if cond.x_init is not None:
            x = cond.x_init.to(x.dtype).clone()
        index = torch.full((n,), cond.start, dtype=torch.long)
        return DiffusionState(x, index, st, cond, cond.condition.to(x.dtype))

    def model_output(self, state, rows, x=None):
        x = state.x[rows] if x is None else x
        self._usage = self._usage + Usage(nfe=len(x))
        return self.denoiser(x, self.timestep(state.index[rows]), condition=state.condition[rows]).sample


class DiffusionPolicy:
    """The trained denoiser plus what it needs to act: scales, chunk sizes, history, scheduler."""

    def __init__(
        self,
        denoiser,
        scheduler,
        obs_scale: ObsScale,
        action_scale: ActionScale,
        horizon: int,
        execute: int,
        history: int = 0,
        stride: int = 1,
        past: int = 0,
        steps_inference: int = 10,
    ) -> None:
        self.denoiser, self.scheduler = denoiser.eval(), scheduler
        self.obs_scale, self.action_scale = obs_scale, action_scale
        self.horizon, self.execute, self.history, self.stride, self.past = horizon, execute, history, stride, past
        self.steps_inference = steps_inference
        self.act_dim = len(action_scale.low)
        self.obs_dim = len(obs_scale.mean)

    @property
    def sample_shape(self) -> tuple[int, int]:
        return (self.past + self.horizon, self.act_dim)

    # ---- conditioning
    def condition(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Observation frames [history+1, obs_dim] (oldest first) -> the flat normalised condition."""
        f = torch.as_tensor(np.asarray(frames, np.float32)).reshape(self.history + 1, self.obs_dim)
        return self.obs_scale(f).reshape(-1)

    def frames(self, past_obs: list[np.ndarray]) -> np.ndarray:
        """The frames the policy sees given every observation of the episode so far (the current one last)."""
        t = len(past_obs) - 1
        idx = [max(0, t - self.stride * k) for k in range(self.history, -1, -1)]
        return np.stack([past_obs[i] for i in idx])

    # ---- sampling through the diffusion room's process
    def process(self, eta: float = 0.0, num_steps: int | None = None):
        return RowConditionedProcess(
            self.denoiser, self.scheduler, num_steps or self.steps_inference, eta=eta, sample_shape=self.sample_shape
        )

    def start_state(self, process, cond: torch.Tensor, streams: list[int], x_init=None, start: int = 0):
        """``process.init`` of one row per stream: conditions [rows, dim], x_T from each row's own stream unless
        ``x_init`` gives it, ``start`` steps done (:class:`RowConditions`)."""
        return process.init(RowConditions(cond, tuple(streams), x_init, start), len(streams))

    def sample(self, cond: torch.Tensor, n: int, seed: int, process=None, x_init=None, start: int = 0) -> torch.Tensor:
        """``n`` normalised chunks [n, past+H, act_dim] for one condition [dim] (rows r draw stream stream(seed, r))."""
        return self.sample_rows(cond.reshape(1, -1).expand(n, -1), [stream(seed, r) for r in range(n)], process,
                                x_init, start)  # fmt: skip

    def sample_rows(self, cond: torch.Tensor, streams: list[int], process=None, x_init=None, start: int = 0):
        """Normalised chunks [rows, past+H, act_dim], one per (condition row, stream)."""
        proc = process or self.process()
        state = self.start_state(proc, cond, streams, x_init, start)
        with torch.no_grad():
            while not all(proc.is_terminal(state)):
                proc.propose(state)
        return state.x.clamp(-1.0, 1.0)

    def future(self, chunk: torch.Tensor) -> torch.Tensor:
        """The executable part a_{t:t+H} of normalised samples [n, past+H, act_dim]."""
        return chunk[:, self.past :]

    def to_env(self, chunk: torch.Tensor) -> np.ndarray:
        return self.action_scale.denormalize(chunk).numpy()

    # ---- on disk: a diffusers model directory plus policy.json
    def header(self) -> dict:
        return {
            "kind": "diffusion-policy",
            "horizon": self.horizon,
            "execute": self.execute,
            "history": self.history,
            "stride": self.stride,
            "past": self.past,
            "steps_inference": self.steps_inference,
            "obs_scale": self.obs_scale.to_dict(),
            "action_scale": self.action_scale.to_dict(),
        }

    def save(self, out: str | Path, record: dict | None = None) -> None:
        out = Path(out)
        self.denoiser.save_pretrained(out)
        self.scheduler.save_pretrained(out)
        (out / "policy.json").write_text(json.dumps(self.header(), indent=2) + "\n")
        if record is not None:
            (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> DiffusionPolicy:
        from diffusers import DDPMScheduler

        from steerable.diffusion.denoiser import MLPDenoiser

        path = Path(path)
        try:
            h = json.loads((path / "policy.json").read_text())
        except FileNotFoundError:
            raise InputError(f"no policy at {path}: train one with `steerable control train-policy`") from None
        if h.get("kind") != "diffusion-policy":
            raise InputError(f"{path}/policy.json is not a diffusion policy (kind {h.get('kind')!r})")
        den = MLPDenoiser.from_pretrained(path)
        sched = DDPMScheduler.from_pretrained(path)
        return cls(
            den,
            sched,
            ObsScale.from_dict(h["obs_scale"]),
            ActionScale.from_dict(h["action_scale"]),
            h["horizon"],
            h["execute"],
            h["history"],
            h["stride"],
            h["past"],
            h["steps_inference"],
        )
