import math

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("diffusers")

from steerable.control.evaluate import evaluate, summary  # noqa: E402
from steerable.control.policies.normalize import ActionScale  # noqa: E402
from steerable.control.steering.lookahead import Lookahead  # noqa: E402
from steerable.control.steering.process import ControlProcess, Plan, Root  # noqa: E402
from steerable.control.steering.scorers import QScorer, ReturnToGo  # noqa: E402
from steerable.control.steering.vgps import SoftmaxOfN  # noqa: E402
from steerable.control.training.bc import PolicyConfig, train_policy  # noqa: E402
from steerable.control.training.iql import TrainQConfig, train_q  # noqa: E402
from steerable.control.worlds.data import DataConfig, make_dataset  # noqa: E402
from steerable.control.worlds.envs import NavConfig, PointNav2D  # noqa: E402
from steerable.errors import ConfigError, InputError  # noqa: E402
from steerable.search.best_of_n import BestOfN  # noqa: E402

SCALE = ActionScale((-1.0, -1.0), (1.0, 1.0))


@pytest.fixture(scope="module")
def data():
    return make_dataset(DataConfig(out="-", episodes=8, seed=1))


@pytest.fixture(scope="module")
def policy(data):
    cfg = PolicyConfig(data="-", out="-", steps=20, hidden=16, layers=1, steps_inference=3)
    return train_policy(cfg, data, SCALE, progress=False)[0]


@pytest.fixture(scope="module")
def critic(data):
    return train_q(TrainQConfig(data="-", out="-", steps=5, width=8, chunk=8), data, SCALE, progress=False)


def rooted(policy, **kw):
    """An env at its start, a control process and the root it is conditioned on."""
    env = PointNav2D()
    obs, _ = env.reset(seed=4)
    return env, ControlProcess(policy, **kw), Root.of(env, [obs])


def test_rollout_forks_never_touch_the_root_and_count_their_steps(policy):
    env, proc, root = rooted(policy, depth=2, rollout=True)
    before = env.get_state()
    state = proc.init(root, 3, seed=1)
    proc.propose(state)
    assert proc.is_terminal(state) == [False] * 3
    proc.propose(state)
    assert proc.is_terminal(state) == [True] * 3
    plans = proc.preview(state)
    assert all(len(p.chunks) == 2 and p.steps == 8 and p.last_obs is not None for p in plans)
    assert proc.usage.nfe == 2 * 3 * policy.steps_inference and proc.usage.env_steps == 3 * 8
    after = env.get_state()
    assert np.array_equal(before["pos"], after["pos"]) and before["t"] == after["t"] == 0
    assert before["rng"] == after["rng"]  # the root's random stream was not drawn from
    assert len({tuple(p.last_obs) for p in plans}) == 3 and plans[0].ret == pytest.approx(-0.08)  # rows go apart


def test_select_gives_each_copy_its_own_env_and_only_peek_sees_the_real_gusts(policy):
    env, proc, root = rooted(policy, rollout=True)
    state = proc.init(root, 1, seed=0)
    two = proc.select(state, [0, 0])
    assert two.envs[0] is not two.envs[1] and two.streams[0] != two.streams[1]
    a = np.array([0.5, 0.2])
    two.envs[0].step(a)
    assert two.envs[0].t == 1 and two.envs[1].t == 0
    # the real episode's next position after action a, against a fork's
    real = env.clone()
    real.step(a)
    _, peeking, _ = rooted(policy, rollout=True, peek=True)
    seer = peeking.init(root, 1, seed=0).envs[0]
    seer.step(a)
    blind = proc.init(root, 1, seed=0).envs[0]
    blind.step(a)
    assert np.array_equal(seer.pos, real.pos) and not np.array_equal(blind.pos, real.pos)


def test_process_errors(policy):
    with pytest.raises(ConfigError, match="need rollout"):
        ControlProcess(policy, depth=2)
    with pytest.raises(InputError, match="conditioned on a Root"):
        ControlProcess(policy).init("x", 1)
    _, proc, root = rooted(policy)
    with pytest.raises(InputError, match="out of range"):
        proc.select(proc.init(root, 2, 0), [2])
    with pytest.raises(ConfigError, match="rollout=True"):
        ReturnToGo(None).score([root], proc.preview(proc.init(root, 1, 0)))


def test_scorers_by_hand(policy, critic):
    obs = np.arange(6, dtype=np.float32)
    chunk = torch.linspace(-1, 1, 16).reshape(8, 2)
    q = QScorer(critic, policy).score(["x"], [Plan(obs, (chunk,), ())])
    assert q == pytest.approx(critic.q(torch.as_tensor(obs)[None], chunk[None]).tolist(), abs=1e-6)
    last = np.ones(6, np.float32)
    v = float(critic.value(torch.as_tensor(last)[None])[0].detach())
    live = Plan(obs, (chunk,), (), rewards=(0.5, -1.0), last_obs=last)
    ended = Plan(obs, (chunk,), (), rewards=(0.5, -1.0), last_obs=last, done=True, terminated=True)
    timed_out = Plan(obs, (chunk,), (), rewards=(0.5, -1.0), last_obs=last, done=True, terminated=False)
    got = ReturnToGo(critic, gamma=0.9).score(["x"] * 3, [live, ended, timed_out])
    assert got == pytest.approx([0.5 - 0.9 + 0.81 * v, 0.5 - 0.9, 0.5 - 0.9 + 0.81 * v], abs=1e-6)


class Fixed:
    range = (-math.inf, math.inf)
    calls = 0
    forward_tokens = 0

    def __init__(self, values):
        self.values = values

    def score(self, prompts, samples):
        return self.values[: len(samples)]


def test_softmax_of_n_draws_by_softmax_and_best_of_n_takes_the_max(policy):
    _, proc, root = rooted(policy)
    scores = Fixed([0.0, math.log(3.0)])
    picks = []
    for seed in range(200):
        res = SoftmaxOfN(beta=1.0).run(proc, scores, 2, root, seed=seed)
        picks.append(int(res.candidates[1].sample is res.sample))
    assert 0.65 < np.mean(picks) < 0.85  # P(second) = 3 / 4
    assert [c.weight for c in res.candidates] == pytest.approx([0.25, 0.75])
    best = BestOfN().run(proc, Fixed([0.3, 0.9, 0.1]), 3, root, seed=0)
    assert best.sample is best.candidates[1].sample and best.cost.nfe == 3 * policy.steps_inference


def test_lookahead_search_plans_in_forks_and_counts_it(policy, critic):
    env = PointNav2D(NavConfig(max_steps=16, obstacles=()))
    ctl = Lookahead(policy, critic=critic, strategy="bon", budget=2, depth=2)
    eps = evaluate(env, ctl, 2, seed=0, progress=False)
    for e in eps:
        # predictions at t = 0, 4, 8, 12 of 2 plans each; the forks of the last one hit the time limit after
        # one chunk, so it plans 1 chunk, the others 2 (4 fork steps per chunk)
        assert e.predictions == 4 and e.scorer_calls == 2 * 4
        assert e.nfe == (3 * 2 * 2 + 2) * policy.steps_inference and e.fork_steps == (3 * 2 * 2 + 2) * 4
    assert summary("search", 2, eps)["fork_steps_per_step"] > 0
    beam = Lookahead(policy, critic=critic, strategy="beam", budget=4, depth=2)
    assert evaluate(env, beam, 1, seed=0, progress=False)[0].fork_steps > 0
    with pytest.raises(ConfigError, match="uses no scorer"):
        Lookahead(policy, critic=critic, strategy="sc")
    with pytest.raises(ConfigError, match="--set critic=DIR"):
        Lookahead(policy)
    with pytest.raises(ConfigError, match="search: depth must be >= 1"):
        Lookahead(policy, critic=critic, depth=0)
