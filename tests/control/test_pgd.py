import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")

from steerable.control.training.pgd import (  # noqa: E402
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
from steerable.control.training.pgd_run import PGDConfig, run_pgd  # noqa: E402
from steerable.control.training.td3bc import td3_target, td3bc_actor_loss  # noqa: E402
from steerable.control.worlds.data import DataConfig, make_dataset  # noqa: E402
from steerable.errors import ConfigError  # noqa: E402

LOW, HIGH = np.array([-1.0, -1.0], np.float32), np.array([1.0, 1.0], np.float32)


@pytest.fixture(scope="module")
def data():
    return make_dataset(DataConfig(out="-", episodes=12, seed=3))


def test_guidance_schedule_matches_the_hand_computation():
    # coeff 2, n = 4, cosine 0.3, delay 1: step 0 delayed, step 3 (the last) never guided
    lam = guidance_coefficients(2.0, 4, cosine=0.3, delay=1)
    assert lam[0] == 0.0 and lam[3] == 0.0
    assert lam[1] == pytest.approx(2 * (0.75 + 0.3 * 1.0))
    assert lam[2] == pytest.approx(2 * (0.5 + 0.3 * math.sin(3 * math.pi / 4)))
    assert guidance_coefficients(0.0, 4) == [0.0] * 4


def test_guidance_gradient_points_toward_the_policy_action():
    # obs_dim 1, act_dim 1: action column mean 0.5, std 2; the actor wants 0.3 everywhere
    layout = TrajectoryLayout(1, 1, mean=(0.0, 0.5, 0.0, 0.0), std=(1.0, 2.0, 1.0, 1.0))
    guide = PolicyGuide(actor=lambda o: torch.full((len(o), 1), 0.3), to_unit=lambda a: a)
    x = torch.zeros(2, 3, 4)
    x[0, :, 1] = torch.tensor([0.0, 1.0, -1.0])  # standardised actions -> env actions 0.5, 2.5, -1.5
    g = guide.grad(x, layout)
    a_env = 0.5 + 2.0 * x[..., 1:2]
    # d/dx log N(a; mu, 1) = (mu - a) * da/dx = (0.3 - a) * 2
    assert torch.allclose(g, (0.3 - a_env) * 2.0)
    assert g[0, 1, 0] < 0 < g[0, 2, 0]  # above the policy's action: pushed down; below: pushed up
    normed = PolicyGuide(guide.actor, guide.to_unit, normalise=True).grad(x, layout)
    assert torch.allclose(normed[0].norm(), torch.tensor(1.0)) and torch.isfinite(normed).all()


@dataclass
class _Out:
    sample: torch.Tensor


class GaussianDenoiser(torch.nn.Module):
    """The exact EDM network for data ~ N(m, s^2) per entry: D(x; sigma) = m + s^2 / (s^2 + sigma^2) (x - m)."""

    def __init__(self, m: float, s: float) -> None:
        super().__init__()
        self.m, self.s = m, s

    def forward(self, inp, timestep):
        sigma = torch.exp(timestep / 250).view(-1, 1, 1)  # the time input is 1000 * log(sigma) / 4
        c_in, c_skip, c_out = 1 / (sigma**2 + 1).sqrt(), 1 / (sigma**2 + 1), sigma / (sigma**2 + 1).sqrt()
        x = inp / c_in
        d = self.m + self.s**2 / (self.s**2 + sigma**2) * (x - self.m)
        return _Out((d - c_skip * x) / c_out)


def test_edm_sampler_recovers_the_data_distribution_and_guidance_moves_actions():
    layout = TrajectoryLayout(1, 1, mean=(0.0,) * 4, std=(1.0,) * 4)
    model = GaussianDenoiser(0.5, 0.4)
    x, stats = sample_trajectories(model, layout, 2000, 3, 64, 0)
    assert x.shape == (2000, 4, 4) and stats.nfe == 2 * 64 - 1 and stats.guided_steps == 0
    assert abs(x.mean().item() - 0.5) < 0.02 and abs(x.std().item() - 0.4) < 0.02
    guide = PolicyGuide(actor=lambda o: torch.full((len(o), 1), -0.5), to_unit=lambda a: a)
    lam = guidance_coefficients(0.05, 64)
    y, stats = sample_trajectories(model, layout, 2000, 3, 64, 0, guide=guide,
                                   coefficients=lam)  # fmt: skip
    assert stats.guided_steps == 63 and stats.mean_shift > 0
    assert y[..., 1].mean() < x[..., 1].mean() - 0.05  # actions pulled toward the policy's -0.5
    assert abs(y[..., 0].mean().item() - x[..., 0].mean().item()) < 0.02  # observations are not guided


def test_inpainted_starts_are_kept_and_leave_the_rest_to_the_model():
    # per-entry independent data N(0.5, 0.4^2): inpainting row 0's observation must not move the other entries
    layout = TrajectoryLayout(1, 1, mean=(0.0,) * 4, std=(1.0,) * 4)
    model = GaussianDenoiser(0.5, 0.4)
    starts = np.linspace(-3, 3, 2000, dtype=np.float32)[:, None]
    x, _ = sample_trajectories(model, layout, 2000, 3, 64, 0, starts=starts)
    assert torch.allclose(x[:, 0, 0], torch.as_tensor(starts[:, 0]))
    assert abs(x[:, 1:, 0].mean().item() - 0.5) < 0.02 and abs(x[:, 1:, 0].std().item() - 0.4) < 0.02
    assert abs(x[:, 0, 1].mean().item() - 0.5) < 0.03  # row 0's action is still the model's
    delta = TrajectoryLayout(1, 1, mean=(0.0,) * 4, std=(1.0,) * 4, encoding="delta", first_mean=(1.0,),
                             first_std=(2.0,))  # fmt: skip
    y, _ = sample_trajectories(model, delta, 8, 3, 8, 0, starts=starts[:8])
    assert torch.allclose(y[:, 0, 0], torch.as_tensor(starts[:8, 0]), atol=1e-5)


def test_terminal_consistency_by_hand():
    # next positions: in the wall (x > 1), at the goal (0, 0) within 0.3, and free; flags: none, goal, one false
    nxt = np.array([[2, 0, 0, 0, 0, 0], [0.1, 0, 0, 0, 0, 0], [0.5, 0, 0, 0, 0, 0], [0.5, 0.5, 0, 0, 0, 0]])
    t = Transitions(nxt, np.zeros((4, 2)), np.zeros(4), nxt, np.array([False, True, True, False]))
    c = terminal_consistency(t, lambda p: p[:, 0] > 1, 0.3)
    assert c == {"missed": 0.25, "false": 0.25}


def test_windows_are_real_sub_trajectories(data):
    w = trajectory_windows(data, 8, stride=3)
    assert w.shape[1:] == (9, 6 + 2 + 2)
    t = read_transitions(torch.as_tensor(w), TrajectoryLayout.fit(w, 6), LOW, HIGH)
    assert len(t) == len(w) * 8
    # every window transition is a real one: obs_{t+1} of the window is the data's next_obs
    real = {tuple(np.round(np.r_[o, n], 5)) for o, n in zip(data.obs, data.next_obs, strict=True)}
    assert all(tuple(np.round(np.r_[o, n], 5)) in real for o, n in zip(t.obs, t.next_obs, strict=True))
    # each terminated episode's terminal transition is in some window
    assert t.terminated.sum() == data.terminated.sum()
    with pytest.raises(Exception, match="no episode has 1000 transitions"):
        trajectory_windows(data, 1000)


def test_delta_encoding_by_hand_and_both_encodings_round_trip():
    # obs_dim 1, act_dim 1; two trajectories of 2 transitions: rows (obs, action, reward, done)
    x = torch.tensor([[[1.0, 0.5, 0.0, 0.0], [3.0, -0.5, 0.0, 0.0], [7.0, 0.0, 0.0, 0.0]],
                      [[2.0, 0.1, 1.0, 0.0], [2.0, 0.3, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]])  # fmt: skip
    layout = TrajectoryLayout.fit(x.numpy(), 1, "delta")
    # row 0's obs: 1, 2 -> mean 1.5, std 0.5; differences 2, 4, 0, -1 -> mean 1.25, std sqrt(3.6875)
    assert layout.first_mean == pytest.approx((1.5,)) and layout.first_std == pytest.approx((0.5,))
    assert layout.mean[0] == pytest.approx(1.25) and layout.std[0] == pytest.approx(math.sqrt(3.6875))
    # actions over rows 0..1 only (row 2's placeholder is left out): 0.5, -0.5, 0.1, 0.3 -> mean 0.1
    assert layout.mean[1] == pytest.approx(0.1)
    z = layout.standardise(x)
    assert z[0, 0, 0] == pytest.approx((1 - 1.5) / 0.5) and z[0, 2, 0] == pytest.approx((4 - 1.25) / layout.std[0])
    assert torch.allclose(layout.unstandardise(z), x, atol=1e-6)
    absolute = TrajectoryLayout.fit(x.numpy(), 1, "absolute")
    assert absolute.mean[0] == pytest.approx(16 / 6) and absolute.first_mean == ()
    assert torch.allclose(absolute.unstandardise(absolute.standardise(x)), x, atol=1e-6)
    with pytest.raises(Exception, match="encoding must be one of"):
        TrajectoryLayout.fit(x.numpy(), 1, "log")


def test_read_transitions_ends_a_trajectory_at_its_first_terminal():
    layout = TrajectoryLayout(1, 1, mean=(0.0,) * 4, std=(1.0,) * 4)
    x = torch.zeros(2, 5, 4)
    x[..., 0] = torch.arange(5.0)  # obs 0..4
    x[0, 1, -1], x[0, 2, -1] = 0.7, 0.9  # terminal at transition 1 (and a flag after it, dropped)
    x[1, 3, -1] = 0.4  # below 0.5: not terminal
    t = read_transitions(x, layout, LOW[:1], HIGH[:1])
    assert len(t) == 2 + 4 and t.terminated.tolist() == [False, True, False, False, False, False]
    assert t.obs[:, 0].tolist() == [0, 1, 0, 1, 2, 3] and t.next_obs[:, 0].tolist() == [1, 2, 1, 2, 3, 4]


def test_padded_windows_give_terminals_their_share(data):
    plain, padded = trajectory_windows(data, 8, stride=2), trajectory_windows(data, 8, stride=2, pad_terminal=True)
    layout = TrajectoryLayout.fit(padded, 6)
    t, t0 = (
        read_transitions(torch.as_tensor(padded), layout, LOW, HIGH),
        read_transitions(torch.as_tensor(plain), layout, LOW, HIGH),
    )
    real = {tuple(np.round(np.r_[o, n], 5)) for o, n in zip(data.obs, data.next_obs, strict=True)}
    assert all(tuple(np.round(np.r_[o, n], 5)) in real for o, n in zip(t.obs, t.next_obs, strict=True))
    share = data.terminated.mean()
    # a terminal sits in one plain window but in about length / stride = 4 padded ones, as any transition
    assert t0.terminated.mean() < 0.5 * share and abs(t.terminated.mean() - share) < 0.4 * share
    assert padded[:, :, -1].max() == 1.0 and np.all(np.diff(padded[:, :-1, -1], axis=1) >= 0)  # absorbing


def test_synthetic_trajectories_follow_the_dynamics_better_than_mismatched_pairs(data):
    torch.manual_seed(0)
    from steerable.control.training.pgd_run import train_trajectory_model

    cfg = PGDConfig(
        length=4, stride=1, diffusion_steps=400, diffusion_hidden=128, diffusion_layers=2, diffusion_lr=3e-3
    )
    windows = trajectory_windows(data, 4, 1, cfg.pad_terminal)
    layout = TrajectoryLayout.fit(windows, 6, cfg.encoding)
    model, _ = train_trajectory_model(cfg, windows, layout)
    traj, _ = sample_trajectories(model, layout, 256, 4, 16, 1)
    t = read_transitions(traj, layout, LOW, HIGH)
    assert len(t) <= 256 * 4 and t.obs.shape[1] == 6 and t.action.shape == (len(t), 2) and np.isfinite(t.obs).all()
    assert (np.abs(t.action) <= 1).all()
    res = dynamics_residual(t)
    mismatched = np.random.default_rng(0).permutation(t.next_obs)
    shuffled = dynamics_residual(Transitions(t.obs, t.action, t.reward, mismatched, t.terminated))
    assert res["position"] < 0.3 * shuffled["position"], (res, shuffled)
    assert res["goal"] < 0.3 * shuffled["goal"], (res, shuffled)
    real = dynamics_residual(Transitions.from_dataset(data))
    assert real["position"] < 1e-5 and real["goal"] == 0.0  # the real data follow p' = p + dt v' exactly


def test_td3bc_actor_loss_and_target_on_a_hand_example():
    q = torch.tensor([1.0, -3.0], requires_grad=True)
    pi, a = torch.tensor([[0.5], [0.0]]), torch.tensor([[0.0], [0.0]])
    loss = td3bc_actor_loss(q, pi, a, alpha=2.5)
    # lambda = 2.5 / mean|q| = 1.25; -lambda * mean q = 1.25; BC = (0.25 + 0) / 2
    assert loss.item() == pytest.approx(1.25 + 0.125)
    loss.backward()
    assert torch.allclose(q.grad, torch.tensor([-0.625, -0.625]))  # lambda is held constant
    y = td3_target(torch.tensor([1.0, 1.0]), torch.tensor([False, True]), torch.tensor([2.0, 5.0]),
                   torch.tensor([3.0, 4.0]), gamma=0.9)  # fmt: skip
    assert torch.allclose(y, torch.tensor([1.0 + 0.9 * 2.0, 1.0]))


def test_config_bounds():
    with pytest.raises(ConfigError, match="arms"):
        PGDConfig(arms="real,moon")
    with pytest.raises(ConfigError, match="synth-batch must be < batch"):
        PGDConfig(batch=16, synth_batch=16)
    with pytest.raises(ConfigError, match="guidance must be >= 0"):
        PGDConfig(guidance=-1)
    with pytest.raises(ConfigError, match="--starts takes sampled or real"):
        PGDConfig(starts="data")
    with pytest.raises(ConfigError, match="--encoding takes one of"):
        PGDConfig(encoding="log")


def test_run_pgd_end_to_end_and_reuses_the_trajectory_model(tmp_path, data):
    data.save(tmp_path / "d.npz")
    cfg = PGDConfig(data=str(tmp_path / "d.npz"), out=str(tmp_path / "o"), length=4, diffusion_steps=3,
                    diffusion_hidden=16, diffusion_layers=1, sample_steps=3, synth_trajectories=4, lifetime=2,
                    agent_steps=4, batch=8, synth_batch=6, hidden=8, episodes=2)  # fmt: skip
    r = run_pgd(cfg)
    assert set(r["arms"]) == {"real", "unguided", "pgd"}
    pgd, unguided = r["arms"]["pgd"]["synthetic_sets"], r["arms"]["unguided"]["synthetic_sets"]
    assert [s["guided_steps"] for s in pgd] == [0, 2] and [s["guided_steps"] for s in unguided] == [0, 0]
    assert json.loads((tmp_path / "o" / "results.json").read_text())["arms"]["real"]["steps"] == 4
    assert set(pgd[0]["terminal_consistency"]) == {"missed", "false"}
    inpainted = run_pgd(PGDConfig(**{**cfg.__dict__, "arms": "pgd", "starts": "real"}))["arms"]["pgd"]
    assert [s["guided_steps"] for s in inpainted["synthetic_sets"]] == [0, 2]
    r2 = run_pgd(PGDConfig(**{**cfg.__dict__, "arms": "real"}))
    assert r2["trajectory_model"] == r["trajectory_model"]  # reused, not retrained
    make_dataset(DataConfig(out="-", episodes=5, seed=4)).save(tmp_path / "d.npz")  # other data, same path
    r3 = run_pgd(PGDConfig(**{**cfg.__dict__, "arms": "real"}))
    assert r3["trajectory_model"]["windows"] != r["trajectory_model"]["windows"]  # retrained on the new data


@pytest.mark.parametrize(
    "args, needle",
    [(["--synth-batch", "999"], "synth-batch must be < batch"), (["--guidance", "-1"], "guidance must be >= 0"),
     (["--arms", "moon"], "--arms takes"), (["--data", "/no/such.npz"], "no dataset at /no/such.npz"),
     (["--encoding", "log"], "--encoding takes one of"), (["--starts", "data"], "--starts takes sampled or real")],
)  # fmt: skip
def test_cli_bad_input_is_one_line_and_exit_2(args, needle, capsys):
    from steerable.cli import run

    assert run(["control", "pgd", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
