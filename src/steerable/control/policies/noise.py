"""Latent-noise policies: SB3's SAC actor (DSRL, GoRL) and DSRL-NA's noise actor, loaded to act."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def load_noise_policy(path: str | Path):
    """The actor of a saved DSRL run (``sac.zip``), enough to act: SB3's policy with only the actor's weights
    (the critics, LayerNorm or not, are not needed to act). A DSRL-NA ``actor.pt``: :func:`load_na_actor`."""
    from stable_baselines3.common.save_util import load_from_zip_file
    from stable_baselines3.sac.policies import SACPolicy

    data, params, _ = load_from_zip_file(path, device="cpu")
    pol = SACPolicy(data["observation_space"], data["action_space"], lambda _: 0.0, **data["policy_kwargs"])
    actor = {k.removeprefix("actor."): v for k, v in params["policy"].items() if k.startswith("actor.")}
    pol.actor.load_state_dict(actor)
    return pol.eval()


def save_sac_actor(sac, out: str | Path) -> None:
    """The SAC actor alone, to act (what ships): ``noise_policy.safetensors`` and ``noise_policy.json`` (its shape).

    The critics, target critics and optimiser states of ``sac.zip`` are not needed to act; at width 256 x 3 the
    actor is ~0.6 MB of float32 where the whole zip is several times that."""
    import json

    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sac.actor.state_dict().items()}, out / "noise_policy.safetensors")
    shape = {
        "obs_dim": int(sac.observation_space.shape[0]),
        "w_dim": int(sac.action_space.shape[0]),
        "magnitude": float(sac.action_space.high[0]),
        "net_arch": list(sac.actor.net_arch),
        "activation": "tanh",
    }
    (out / "noise_policy.json").write_text(json.dumps(shape, indent=2) + "\n")


def load_sac_actor(path: str | Path):
    """The actor :func:`save_sac_actor` wrote (``path``: its directory), as SB3's SAC policy to act with."""
    import json

    import gymnasium as gym
    from safetensors.torch import load_file
    from stable_baselines3.sac.policies import SACPolicy

    path = Path(path)
    shape = json.loads((path / "noise_policy.json").read_text())
    obs = gym.spaces.Box(-np.inf, np.inf, (shape["obs_dim"],), np.float32)
    box = gym.spaces.Box(-shape["magnitude"], shape["magnitude"], (shape["w_dim"],), np.float32)
    pol = SACPolicy(obs, box, lambda _: 0.0, net_arch=shape["net_arch"], activation_fn=nn.Tanh)
    pol.actor.load_state_dict(load_file(path / "noise_policy.safetensors"))
    return pol.eval()


def mlp(d_in: int, width: int, layers: int, d_out: int, layer_norm: bool) -> nn.Sequential:
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(d_in, width), *([nn.LayerNorm(width)] if layer_norm else []), nn.Tanh()]
        d_in = width
    return nn.Sequential(*mods, nn.Linear(d_in, d_out))


class NoiseActor(nn.Module):
    """Tanh-Gaussian policy over w in Box(+-magnitude); ``predict`` is the deterministic mean (DSRLController's API)."""

    def __init__(self, obs_dim: int, w_dim: int, width: int, layers: int, magnitude: float) -> None:
        super().__init__()
        self.body = mlp(obs_dim, width, layers - 1, width, False) if layers > 1 else nn.Linear(obs_dim, width)
        self.mu, self.log_std = nn.Linear(width, w_dim), nn.Linear(width, w_dim)
        self.magnitude = magnitude

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.body(obs))
        mu, log_std = self.mu(h), self.log_std(h).clamp(-20, 2)
        u = mu + log_std.exp() * torch.randn_like(mu)
        logp = torch.distributions.Normal(mu, log_std.exp()).log_prob(u) - torch.log(1 - torch.tanh(u) ** 2 + 1e-6)
        return torch.tanh(u) * self.magnitude, logp.sum(-1)  # log pi in tanh units, as SB3

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        with torch.no_grad():
            mu = self.mu(torch.tanh(self.body(torch.as_tensor(np.asarray(obs, np.float32)))))
        return (torch.tanh(mu) * self.magnitude).numpy(), None


def load_na_actor(path: str | Path) -> NoiseActor:
    """The noise actor of a saved DSRL-NA run (``actor.pt``)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    actor = NoiseActor(**blob["shape"])
    actor.load_state_dict(blob["state"])
    return actor.eval()
