"""EDM's stochastic Heun sampler as a process: the data distribution recovered, NFE counted, rows on own streams."""

import math
from dataclasses import dataclass

import pytest
import torch

pytest.importorskip("diffusers")

from steerable.diffusion.edm import EDMProcess, edm_denoise, edm_scheduler  # noqa: E402
from steerable.errors import ConfigError, InputError  # noqa: E402


@dataclass
class _Out:
    sample: torch.Tensor


class GaussianDenoiser(torch.nn.Module):
    """The exact EDM network F for data ~ N(m, s^2) per entry, so that D(x; sigma) = m + s^2/(s^2+sigma^2) (x - m)
    (sigma_data 1, time input 1000 log(sigma) / 4)."""

    def __init__(self, m: float, s: float) -> None:
        super().__init__()
        self.m, self.s = m, s

    def forward(self, inp, timestep):
        sigma = torch.exp(timestep / 250).view(-1, *([1] * (inp.ndim - 1)))
        c_in, c_skip, c_out = 1 / (sigma**2 + 1).sqrt(), 1 / (sigma**2 + 1), sigma / (sigma**2 + 1).sqrt()
        x = inp / c_in
        d = self.m + self.s**2 / (self.s**2 + sigma**2) * (x - self.m)
        return _Out((d - c_skip * x) / c_out)


def run(process, n, seed):
    state = process.init(None, n, seed)
    while not all(process.is_terminal(state)):
        process.propose(state)
    return state


def test_the_preconditioned_denoiser_is_edms_d():
    model = GaussianDenoiser(0.5, 0.4)
    x = torch.randn(7, 3)
    sigma = torch.full((7,), 2.0)
    want = 0.5 + 0.16 / (0.16 + 4.0) * (x - 0.5)
    assert torch.allclose(edm_denoise(edm_scheduler(), model, x, sigma), want, atol=1e-5)


def test_the_sampler_recovers_the_data_and_counts_two_calls_a_step_but_the_last():
    proc = EDMProcess(GaussianDenoiser(0.5, 0.4), num_steps=64, sample_shape=(4,))
    state = run(proc, 3000, seed=0)
    assert abs(state.x.mean().item() - 0.5) < 0.02 and abs(state.x.std().item() - 0.4) < 0.02
    assert proc.usage.nfe == 3000 * (2 * 64 - 1)
    assert proc.sigmas[0] == pytest.approx(80.0) and proc.sigmas[-1] == 0.0 and len(proc.sigmas) == 65
    churn = min(80 / 64, math.sqrt(2) - 1)  # S_churn 80 over 64 steps, only where 0.05 <= sigma <= 50
    assert all(g == (churn if 0.05 <= s <= 50 else 0.0) for g, s in zip(proc.gammas, proc.sigmas, strict=False))


def test_a_row_is_its_own_whatever_its_batch_and_forks_branch_off():
    proc = EDMProcess(GaussianDenoiser(0.0, 1.0), num_steps=8, sample_shape=(2, 3))
    many, few = run(proc, 6, seed=4), run(proc, 2, seed=4)
    assert torch.equal(many.x[:2], few.x)
    state = proc.init("cond", 2, seed=1)
    proc.propose(state)
    two = proc.select(state, [0, 0, 1])
    assert two.cond == "cond" and torch.equal(two.x[0], two.x[1])
    first = proc.select(state, [0])
    proc.propose(two)
    proc.propose(first)
    assert torch.equal(two.x[0], first.x[0]) and not torch.equal(two.x[0], two.x[1])  # the copy branched
    assert proc.concat([two, first]).x.shape == (4, 2, 3)
    with pytest.raises(InputError, match="out of range"):
        proc.select(state, [5])


def test_guidance_moves_each_step_before_it_runs_and_preview_is_d_of_x():
    seen = []

    def guidance(x, i):
        seen.append(i)
        return x - 0.1

    proc = EDMProcess(GaussianDenoiser(0.0, 1.0), num_steps=4, sample_shape=(3,), guidance=guidance)
    state = run(proc, 5, seed=0)
    assert seen == [0, 1, 2, 3]
    fresh = proc.init(None, 5, seed=0)
    before = proc.usage.nfe
    shown = proc.preview(fresh)
    assert proc.usage.nfe - before == 5
    assert torch.allclose(shown, edm_denoise(proc.scheduler, proc.denoiser, fresh.x, proc.sigmas[0]))
    assert torch.equal(proc.preview(state), state.x)  # done rows show their sample
    with pytest.raises(ConfigError, match="2 to 10000 steps"):
        EDMProcess(GaussianDenoiser(0.0, 1.0), num_steps=1, sample_shape=(3,))
