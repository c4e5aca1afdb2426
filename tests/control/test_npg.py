"""N-PG-IGT, (N)-HARPG, STORM-PG and REINFORCE: each update against the equations computed by hand."""

import json
import math
import subprocess

import pytest
import torch

pytest.importorskip("gymnasium")

from steerable.control.training.npg import (  # noqa: E402
    HARPG,
    NHARPG,
    NPGIGT,
    PGConfig,
    PGProblem,
    Policy,
    Reinforce,
    StormPG,
    Trajectory,
    train_pg,
)

A = torch.tensor([[-2.0, 0.5], [0.5, -1.0]])
B = torch.tensor([1.0, -3.0])


class Linear:
    """A problem whose 'policy gradient' is A theta + b and whose curvature is A, so updates are checkable by hand;
    it records where each trajectory was sampled."""

    def __init__(self) -> None:
        self.gen = torch.Generator().manual_seed(0)
        self.points: list[torch.Tensor] = []
        self.count = 0
        self.hv_at = None

    def sample(self, theta):
        self.points.append(theta.clone())
        self.count += 1
        return None

    def grad(self, theta, traj):
        return A @ theta + B

    def hessian_vector(self, theta, traj, v):
        self.hv_at = theta.clone()
        return A @ v

    def log_ratio(self, traj, num, den):
        return math.log(2.0)


def g(theta):
    return A @ theta + B


class Bandit(PGProblem):
    """One step, two actions, pi = softmax(theta): Phi = w log pi(a), whose derivatives are known in closed form."""

    def __init__(self) -> None:
        pass

    def log_probs(self, theta, traj):
        return torch.log_softmax(theta, 0)[traj.act]


def test_reinforce_takes_the_decaying_plain_step():
    pb, th = Linear(), torch.tensor([1.0, 2.0])
    est = Reinforce(0.1, 1.0)
    new, _ = est.step(0, th, th, pb)
    assert torch.allclose(new, th + 0.1 * g(th))
    new2, _ = est.step(4, th, th, pb)
    assert torch.allclose(new2, th + 0.1 * (2 / 6) ** (2 / 3) * g(th))


def test_n_pg_igt_samples_at_the_extrapolated_point_and_steps_gamma_t():
    pb, est = Linear(), NPGIGT(0.5, 1.0)
    th0 = torch.tensor([1.0, 0.0])
    th1, info = est.step(0, th0, th0, pb)
    assert torch.equal(pb.points[0], th0) and info["extrapolation"] == 0.0  # eta_0 = 1: no transport yet
    assert torch.allclose(th1 - th0, 0.5 * g(th0) / g(th0).norm())
    d0 = g(th0)
    th2, info = est.step(1, th1, th0, pb)
    eta = (2 / 3) ** 0.8
    tilde = th1 + (1 - eta) / eta * (th1 - th0)
    assert torch.allclose(pb.points[1], tilde) and info["extrapolation"] == pytest.approx((1 - eta) / eta)
    d1 = (1 - eta) * d0 + eta * g(tilde)
    assert torch.allclose(est.d, d1)
    assert float((th2 - th1).norm()) == pytest.approx(0.5 * 2 / 3)
    assert torch.allclose((th2 - th1) / (th2 - th1).norm(), d1 / d1.norm())


def test_harpg_corrects_the_momentum_with_the_hessian_on_the_segment():
    pb, est = Linear(), NHARPG(0.5, 1.0)
    th0 = torch.tensor([1.0, 0.0])
    th1, _ = est.step(0, th0, th0, pb)
    assert pb.count == 1 and pb.hv_at is None  # eta_0 = 1: d_0 = g_0, no second trajectory
    th2, info = est.step(1, th1, th0, pb)
    assert pb.count == 3  # tau^_1 and tau_1
    q = (pb.hv_at - th0) / (th1 - th0)
    assert torch.allclose(q, q[0].expand(2)) and 0 <= float(q[0]) <= 1  # theta^ on [theta_0, theta_1]
    eta = 2 / 3
    d1 = (1 - eta) * (g(th0) + A @ (th1 - th0)) + eta * g(th1)
    assert torch.allclose(est.d, d1)
    assert float((th2 - th1).norm()) == pytest.approx(0.5 * 2 / 3)
    plain = HARPG(0.5, 1.0)
    plain.d = g(th0)
    th2p, _ = plain.step(1, th1, th0, Linear())
    assert torch.allclose(th2p, th1 + 0.5 * (2 / 3) ** 0.5 * d1)


def test_storm_pg_reweights_the_old_gradient_by_the_likelihood_ratio():
    pb, est = Linear(), StormPG(0.1, 0.2)
    th0, th1 = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])
    est.d = torch.tensor([0.3, -0.7])
    new, info = est.step(3, th1, th0, pb)
    assert info["is_weight"] == pytest.approx(2.0)
    d = 0.2 * g(th1) + 0.8 * (torch.tensor([0.3, -0.7]) + g(th1) - 2.0 * g(th0))
    assert torch.allclose(est.d, d) and torch.allclose(new, th1 + 0.1 * d)


def test_bandit_gradient_hessian_vector_and_importance_weight_by_hand():
    pb, theta, v = Bandit(), torch.tensor([0.3, -0.4]), torch.tensor([0.7, 0.2])
    traj = Trajectory(obs=None, act=torch.tensor(1), weight=torch.tensor(2.5), ret=0.0)
    pi = torch.softmax(theta, 0)
    score = torch.tensor([0.0, 1.0]) - pi
    assert torch.allclose(pb.grad(theta, traj), 2.5 * score)
    hess = -2.5 * (torch.diag(pi) - torch.outer(pi, pi))
    assert torch.allclose(pb.hessian_vector(theta, traj, v), 2.5 * score * (score @ v) + hess @ v, atol=1e-6)
    other = torch.tensor([1.0, 0.0])
    assert pb.log_ratio(traj, other, theta) == pytest.approx(math.log(torch.softmax(other, 0)[1] / pi[1]), rel=1e-5)


def test_hessian_vector_of_an_mlp_policy_matches_the_explicit_hessian():
    torch.manual_seed(0)
    pb = PGProblem.__new__(PGProblem)
    pb.policy = Policy(3, 2, 4, discrete=False)
    pb.shapes = [p.shape for p in pb.policy.parameters()]
    pb.names = [n for n, _ in pb.policy.named_parameters()]
    theta = torch.cat([p.detach().flatten() for p in pb.policy.parameters()]).double()
    pb.policy.double()
    traj = Trajectory(torch.randn(5, 3).double(), torch.randn(5, 2).double(), torch.randn(5).double(), 0.0)
    v = torch.randn_like(theta)

    def phi(th):
        return (traj.weight * pb.log_probs(th, traj)).sum()

    hess = torch.autograd.functional.hessian(phi, theta)
    grad_phi = torch.autograd.functional.jacobian(phi, theta)
    score = torch.autograd.functional.jacobian(lambda th: pb.log_probs(th, traj).sum(), theta)
    want = torch.outer(grad_phi, score) @ v + hess @ v
    assert torch.allclose(pb.hessian_vector(theta, traj, v), want, atol=1e-9)
    eps = 1e-6  # and the Hessian part agrees with central differences of the gradient
    fd = (pb.grad(theta + eps * v, traj) - pb.grad(theta - eps * v, traj)) / (2 * eps)
    assert torch.allclose(fd, hess @ v, atol=1e-5)


class Steps:
    """A gymnasium-shaped env of three steps with rewards 1, 2, 3."""

    def reset(self, seed=None):
        self.t = 0
        return [0.0], {}

    def step(self, action):
        self.t += 1
        return [float(self.t)], float(self.t), self.t == 3, False, {}


def test_phi_weights_are_discounted_rewards_to_go_minus_the_previous_baseline():
    policy = Policy(1, 2, 4, discrete=True)
    pb = PGProblem(Steps(), policy, discount=0.5, horizon=10, seed=0)
    theta = torch.cat([p.detach().flatten() for p in policy.parameters()])
    first = pb.sample(theta)
    # R = [1 + 0.5*2 + 0.25*3, 2 + 0.5*3, 3]; weight_t = 0.5^t R_t with no baseline yet
    assert torch.allclose(first.weight, torch.tensor([2.75, 1.75, 0.75]))
    second = pb.sample(theta)  # now the baseline fitted on the first trajectory (same states) predicts R
    assert second.weight.abs().max() < 1e-2 and pb.count == 2 and pb.returns == [6.0, 6.0]


def test_a_short_n_pg_igt_run_improves_cartpole_return():
    r = train_pg(PGConfig(method="n_pg_igt", trajectories=300, eval_every=300, eval_episodes=10, seed=0))
    assert r["trajectories"] == 300 and not r["diverged"]
    assert r["curve"][-1][1] > r["curve"][0][1] + 20, r["curve"]


@pytest.fixture
def run(capsys, tmp_path, monkeypatch):
    from steerable.cli import run as main

    monkeypatch.chdir(tmp_path)

    def go(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main(["control", "train-pg", *map(str, args)])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return go


def test_train_pg_cli_writes_the_curve(run, tmp_path):
    r = run(
        "--method",
        "n_harpg",
        "--trajectories",
        "6",
        "--eval-every",
        "3",
        "--eval-episodes",
        "1",
        "--out",
        "o",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["method"] == "n_harpg" and row["trajectories"] >= 6 and len(row["curve"]) >= 2
    assert json.loads((tmp_path / "o" / "pg.json").read_text())["config"]["method"] == "n_harpg"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--env", "MountainCar-v0"], "env must be one of 'CartPole-v1', 'Pendulum-v1'"),
        (["--method", "adam"], "method must be one of 'reinforce'"),
        (["--trajectories", "0"], "trajectories must be >= 1"),
        (["--step", "0"], "step must be > 0"),
        (["--step", "-1"], "step must be > 0"),
        (["--eta", "1.5"], "eta must be"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run, args, needle):
    r = run(*args)
    assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_the_numpy_actor_draws_from_the_torch_policy_with_the_generator_noise():
    torch.manual_seed(0)
    obs = torch.rand(3)
    gauss = Policy(3, 2, 8, discrete=False)
    a = gauss.actor(4, torch.Generator().manual_seed(5))(0, obs.numpy())
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(5))[0]
    assert torch.allclose(torch.from_numpy(a), (gauss.net(obs) + gauss.log_std.exp() * noise).detach(), atol=1e-6)
    soft = Policy(3, 3, 8, discrete=True)
    cdf = torch.softmax(soft.net(obs), -1).cumsum(-1).detach()
    for seed in range(20):
        u = torch.rand(4, generator=torch.Generator().manual_seed(seed))[0]
        a = soft.actor(4, torch.Generator().manual_seed(seed))(0, obs.numpy())
        assert a == int((cdf <= u).sum())
