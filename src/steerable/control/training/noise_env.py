"""The env seen through a frozen diffusion policy: an action is the initial noise of a chunk (DSRL, GoRL).

The policy samples with deterministic DDIM (eta = 0), so a noise w maps to one
action chunk; :class:`NoiseActionEnv` decodes w, runs the chunk's first
``execute`` actions and returns their summed reward. :class:`GaussianBox` is
its action space, whose ``sample()`` is the base policy's own noise (for SB3's
warm-up); :func:`batched_vec_env` steps several of them with their chunks
decoded in one batched denoiser call.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from steerable.control.policies.diffusion_policy import DiffusionPolicy
from steerable.errors import ConfigError


class GaussianBox(gym.spaces.Box):
    """A box whose ``sample()`` is N(0, I) clipped to it: the base policy's own noise, for SB3's warm-up."""

    def sample(self, mask=None, probability=None) -> np.ndarray:
        return np.clip(self.np_random.normal(size=self.shape), self.low, self.high).astype(self.dtype)


class NoiseActionEnv(gym.Env):
    """The env seen through the frozen policy: an action is the initial noise w of a chunk.

    ``step(w)`` decodes w by DDIM (eta = 0), runs up to ``execute`` actions,
    and returns the summed reward; it stops at termination or truncation and
    reports them apart. ``nfe`` and ``env_steps`` count the spend.
    """

    metadata = {"render_modes": []}

    def __init__(
        self, env: gym.Env, policy: DiffusionPolicy, magnitude: float = 1.5, reward_scale: float = 1.0
    ) -> None:
        if policy.history or policy.past:
            raise ConfigError("dsrl steers a policy that sees only the current observation (history 0, past 0)")
        self.env, self.policy, self.reward_scale = env, policy, reward_scale
        self.observation_space = env.observation_space
        shape = (policy.horizon * policy.act_dim,)
        self.action_space = GaussianBox(-magnitude, magnitude, shape=shape, dtype=np.float32)
        self.proc = policy.process(eta=0.0)
        self.obs: np.ndarray | None = None
        self.env_steps = 0
        self.decoded: np.ndarray | None = None  # a chunk decoded ahead by BatchedNoiseVecEnv

    @property
    def nfe(self) -> int:
        return self.proc.usage.nfe

    def decode(self, obs: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Env actions [H, act_dim] of the chunk the noise ``w`` maps to."""
        x = torch.as_tensor(np.asarray(w, np.float32)).reshape(1, *self.policy.sample_shape)
        chunk = self.policy.sample(self.policy.condition(obs[None]), 1, seed=0, process=self.proc, x_init=x)
        return self.policy.to_env(self.policy.future(chunk)[0])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:  # SB3's auto-reset passes None: seed(None) would draw fresh OS entropy for the warm-up
            self.action_space.seed(seed)
        self.obs, info = self.env.reset(seed=seed, options=options)
        return self.obs, info

    def step(self, w):
        chunk, self.decoded = (self.decoded if self.decoded is not None else self.decode(self.obs, w)), None
        total, term, trunc, info = 0.0, False, False, {}
        for a in chunk[: self.policy.execute]:
            self.obs, r, term, trunc, info = self.env.step(a)
            total += float(r)
            self.env_steps += 1
            if term or trunc:
                break
        return self.obs, total * self.reward_scale, term, trunc, info


def batched_vec_env(envs: list[NoiseActionEnv]):
    """SB3's DummyVecEnv over several noise envs whose chunks decode in one batched denoiser call per step."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    class BatchedNoiseVecEnv(DummyVecEnv):
        def step_wait(self):
            p = envs[0].policy
            w = torch.as_tensor(np.asarray(self.actions, np.float32)).reshape(len(envs), *p.sample_shape)
            cond = torch.stack([p.condition(e.obs[None]) for e in envs])
            chunks = p.sample_rows(cond, [0] * len(envs), envs[0].proc, x_init=w)
            for e, c in zip(envs, p.to_env(p.future(chunks)), strict=True):
                e.decoded = c
            return super().step_wait()

    return BatchedNoiseVecEnv([lambda e=e: e for e in envs])
