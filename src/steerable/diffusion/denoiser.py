"""An epsilon-prediction MLP denoiser written as a diffusers model, so ``save_pretrained``/``from_pretrained`` work.

It predicts the noise eps(x_t, t[, c]) of a flat sample of any shape: an 8x8
digit (``sample_shape=(64,)``), a 2-D point (``(2,)``), or an action chunk
``(horizon, action_dim)`` conditioned on an observation vector
(``condition_dim > 0``). The timestep enters as a sinusoidal embedding (as in
"Attention Is All You Need" / DDPM), passed through a small MLP and
concatenated to the sample (and the condition).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn

from steerable.errors import ConfigError


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[batch, dim]`` of timesteps ``[batch]``: cos and sin at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


@dataclass
class DenoiserOutput(BaseOutput):
    sample: torch.Tensor  # the predicted noise, shaped like the input sample


class MLPDenoiser(ModelMixin, ConfigMixin):
    """eps_theta(x_t, t, c): SiLU MLP over [x_t, time embedding(, condition)].

    ``forward(sample, timestep, condition=None)`` takes ``sample`` shaped
    ``[batch, *sample_shape]``, ``timestep`` a scalar or ``[batch]`` (rows may
    sit at different timesteps), ``condition`` ``[batch, condition_dim]``; it
    returns a :class:`DenoiserOutput` like diffusers' UNets do.
    """

    @register_to_config
    def __init__(
        self,
        sample_shape: tuple[int, ...] = (64,),
        condition_dim: int = 0,
        hidden: int = 256,
        layers: int = 3,
        time_dim: int = 64,
    ) -> None:
        super().__init__()
        if any(s < 1 for s in sample_shape) or hidden < 1 or layers < 1 or time_dim < 2 or condition_dim < 0:
            raise ConfigError(
                f"MLPDenoiser: bad sizes sample_shape={sample_shape} hidden={hidden} layers={layers} "
                f"time_dim={time_dim} condition_dim={condition_dim}"
            )
        self.flat = math.prod(sample_shape)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU())
        width = self.flat + time_dim + condition_dim
        blocks: list[nn.Module] = []
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        blocks.append(nn.Linear(width, self.flat))
        self.net = nn.Sequential(*blocks)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, condition: torch.Tensor | None = None
    ) -> DenoiserOutput:
        b = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim == 0:
            t = t.expand(b)
        parts = [sample.reshape(b, self.flat), self.time_mlp(timestep_embedding(t, self.config.time_dim))]
        if self.config.condition_dim:
            if condition is None or condition.shape != (b, self.config.condition_dim):
                got = None if condition is None else tuple(condition.shape)
                want = (b, self.config.condition_dim)
                raise ConfigError(f"MLPDenoiser needs a condition of shape {want}, got {got}")
            parts.append(condition.to(sample.dtype))
        return DenoiserOutput(sample=self.net(torch.cat(parts, dim=-1)).reshape(sample.shape))
