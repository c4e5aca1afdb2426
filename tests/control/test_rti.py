"""RTI's schedules: the paper's K' (the last K' of every training timestep), the coarse one (of DDIM steps)."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("diffusers")

from steerable.control.registry import EvalConfig, load_policy, make_controller  # noqa: E402
from steerable.control.steering.rti import RTI  # noqa: E402
from steerable.control.worlds.envs import PointNav2D  # noqa: E402
from steerable.errors import ConfigError  # noqa: E402
from steerable.streams import gaussian, stream  # noqa: E402


@pytest.fixture(scope="module")
def policy():
    return load_policy(EvalConfig())  # the shipped PointNav policy: 100 training timesteps, 10 DDIM steps


def abar_from_scratch(t: int, T: int = 100) -> float:
    """squaredcos_cap_v2: beta_i = min(1 - f((i+1)/T) / f(i/T), 0.999), abar_t = prod (1 - beta_i)."""
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    return math.prod(1 - min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(t + 1))


def two_predictions(rti: RTI):
    """The timesteps the denoiser sees at an episode's cold prediction and at its first warm one, and the warm
    prediction's first input (x at entry) with the guess G it was made from."""
    calls: list[tuple[int, torch.Tensor]] = []
    hook = rti.policy.denoiser.register_forward_pre_hook(lambda m, a: calls.append((int(a[1][0]), a[0].clone())))
    try:
        env = PointNav2D()
        rti.reset([7])
        seen = [[env.reset(seed=0)[0]]]
        rti.act([0], seen, [env])
        cold = [t for t, _ in calls]
        prev = rti.prev[0].clone()
        seen[0].append(env.step(np.zeros(2, np.float32))[0])
        calls.clear()
        rti.act([0], seen, [env])
    finally:
        hook.remove()
    guess = torch.cat([prev[1:], prev[-1:]])  # shifted one step, the last action repeated
    return cold, [t for t, _ in calls], calls[0][1][0], guess


@pytest.mark.parametrize(("k", "paper", "coarse"), [(1, [0], [0]), (2, [1, 0], [10, 0]), (3, [2, 1, 0], [20, 10, 0])])
def test_paper_schedule_visits_the_last_k_training_timesteps_coarse_the_last_k_ddim_steps(policy, k, paper, coarse):
    ddim = list(range(90, -1, -10))
    for schedule, want in (("paper", paper), ("coarse", coarse)):
        cold, warm, x, guess = two_predictions(RTI(policy, k_prime=k, schedule=schedule))
        assert cold == ddim  # the first prediction is the policy's own sampler either way
        assert warm == want
        assert torch.equal(x, guess)  # direct: the guess enters as x_t as it is


@pytest.mark.parametrize(("schedule", "t", "std"), [("paper", 2, 0.058), ("coarse", 20, 0.33)])
def test_renoised_guess_enters_at_the_noise_level_of_its_timestep(policy, schedule, t, std):
    rti = RTI(policy, k_prime=3, mode="renoise", schedule=schedule)
    _, warm, x, guess = two_predictions(rti)
    abar = abar_from_scratch(t)
    assert warm[0] == t and math.sqrt(1 - abar) == pytest.approx(std, abs=0.005)
    z = gaussian(torch.tensor([stream(7, 1, 11)]), 0, guess.numel()).float().reshape(guess.shape)
    assert torch.allclose(x, math.sqrt(abar) * guess + math.sqrt(1 - abar) * z, atol=1e-5)


def test_paper_steps_are_the_ddpm_posterior(policy):
    """eta 1 at unit spacing: mean and variance of q(x_{t-1} | x_t, x0) (Ho et al. eq. 6-7), from scratch, at t = 2."""
    proc = RTI(policy, k_prime=3, schedule="paper").warm_proc
    g = torch.Generator().manual_seed(0)
    x, eps, z = (0.1 * torch.randn(4, 8, 2, generator=g) for _ in range(3))
    prev, x0 = proc.ddim_step(eps, torch.full((4,), 97), x, z)
    a2, a1 = abar_from_scratch(2), abar_from_scratch(1)
    beta = 1 - a2 / a1
    assert torch.allclose(x0, (x - math.sqrt(1 - a2) * eps) / math.sqrt(a2), atol=1e-5) and x0.abs().max() < 1
    mean = (math.sqrt(a1) * beta * x0 + math.sqrt(1 - beta) * (1 - a1) * x) / (1 - a2)
    assert torch.allclose(prev, mean + math.sqrt((1 - a1) / (1 - a2) * beta) * z, atol=1e-5)


def test_schedule_option_default_and_bounds(policy):
    assert RTI(policy).schedule == "coarse"
    rti = make_controller(EvalConfig(method="rti", budget=3, set=("schedule=paper",)), policy)
    assert (rti.k_prime, rti.schedule, rti.warm_timesteps()) == (3, "paper", [2, 1, 0])
    assert RTI(policy, k_prime=100, schedule="paper").warm_timesteps()[0] == 99
    with pytest.raises(ConfigError, match=r"K' must be in \[1, 100\]"):
        RTI(policy, k_prime=101, schedule="paper")
    with pytest.raises(ConfigError, match=r"K' must be in \[1, 10\]"):
        RTI(policy, k_prime=11)
    with pytest.raises(ConfigError, match="schedule must be one of"):
        make_controller(EvalConfig(method="rti", set=("schedule=fine",)), policy)
