import math

import pytest
import torch

pytest.importorskip("sklearn")

from steerable.diffusion import mixture as M  # noqa: E402
from steerable.diffusion.digits import DigitReward, judge, load_data, parse_target, split  # noqa: E402
from steerable.errors import InputError  # noqa: E402


def test_the_tilted_mixture_matches_numerical_integration_on_a_grid():
    lam = 10.0
    g = torch.linspace(-1.6, 1.6, 801, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    dens = sum(
        torch.exp(-((pts - mu) ** 2).sum(1) / (2 * M.STD**2)) / (2 * math.pi * M.STD**2) / M.MODES for mu in M.means()
    )
    tilt = dens * torch.exp(lam * M.MixtureReward().reward([""] * len(pts), pts))
    tilt = tilt / tilt.sum()
    w, m, sd = M.tilted(lam)
    nearest = torch.cdist(pts, M.means()).argmin(1)
    mass = torch.zeros(M.MODES, dtype=torch.float64).index_add_(0, nearest, tilt)
    assert torch.allclose(mass, w, atol=1e-4)
    mean0 = (tilt[nearest == 0, None] * pts[nearest == 0]).sum(0) / mass[0]
    assert torch.allclose(mean0, m[0], atol=1e-4)
    assert w[0] == w.max() and sd < M.STD


def test_mmd_is_near_zero_for_the_target_and_large_for_the_untilted_data():
    g = torch.Generator().manual_seed(0)
    near = M.distance(M.sample_target(10.0, 300, g), 10.0)
    far = M.distance(M.sample_data(300, g), 10.0)
    assert abs(near["mmd2"]) < 0.01 and near["mode_tv"] < 0.1
    assert far["mmd2"] > 0.2 and far["mode_tv"] > 0.3


def test_digits_reward_is_a_differentiable_log_probability_and_the_judge_is_independent():
    reward = DigitReward.load()
    x, y = load_data()
    a, b = split()
    assert set(a.tolist()).isdisjoint(b.tolist()) and len(a) + len(b) == len(x)
    xb = torch.from_numpy(x[b[:50]]).requires_grad_(True)
    r = reward.reward([str(int(c)) for c in y[b[:50]]], xb)
    assert (r <= 0).all() and r.exp().mean() > 0.8
    (grad,) = torch.autograd.grad(r.sum(), xb)
    assert grad.abs().sum() > 0
    assert reward.score([str(int(y[b[0]]))], xb[:1].detach()) == pytest.approx([float(r[0].detach())], abs=1e-6)
    assert sum(p == int(c) for p, c in zip(judge().predict(x[a[:200]]), y[a[:200]], strict=True)) / 200 > 0.95


def test_a_digits_target_is_one_digit():
    assert parse_target(" 7 ") == 7
    for bad in ("10", "x", ""):
        with pytest.raises(InputError):
            parse_target(bad)
