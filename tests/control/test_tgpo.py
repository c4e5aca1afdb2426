import math

import numpy as np
import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("diffusers")

from steerable.control.evaluate import evaluate  # noqa: E402
from steerable.control.policies.normalize import ActionScale  # noqa: E402
from steerable.control.steering.tgpo import (  # noqa: E402
    TGPO,
    AllocationProcess,
    Allocations,
    CriticScorer,
    MetropolisHastings,
    subgoal_obs,
)
from steerable.control.training.bc import PolicyConfig, train_policy  # noqa: E402
from steerable.control.training.tgpo import collect, relabel, train_critic  # noqa: E402
from steerable.control.worlds.data import DataConfig, make_dataset  # noqa: E402
from steerable.control.worlds.envs import STLNav  # noqa: E402
from steerable.errors import ConfigError  # noqa: E402
from steerable.search.best_of_n import BestOfN  # noqa: E402

SCALE = ActionScale((-1.0, -1.0), (1.0, 1.0))


@pytest.fixture(scope="module")
def data():
    return make_dataset(DataConfig(out="-", episodes=6, seed=2))


@pytest.fixture(scope="module")
def tpolicy(data):
    cfg = PolicyConfig(data="-", out="-", steps=10, hidden=16, layers=1, steps_inference=2)
    return train_policy(cfg, relabel(data, 2, seed=0), SCALE, progress=False)[0]


def test_relabel_targets_the_point_reached_k_steps_later(data):
    out = relabel(data, per_episode=3, seed=0)
    assert out.obs.shape[1] == 7 and out.episodes == 3 * sum(
        1 for sl in data.episode_slices() if sl.stop - sl.start >= 4
    )
    sl0, first = data.episode_slices()[0], out.episode_slices()[0]
    k = first.stop - first.start
    o = out.obs[first]
    # the subgoal is the position after k steps; time left counts down from k to 1
    assert np.allclose(o[:, 4:6], data.next_obs[sl0.start + k - 1, :2])
    assert o[0, 6] == k and o[-1, 6] == 1
    assert np.array_equal(o[:, :4], data.obs[sl0][:k, :4])
    assert np.array_equal(out.action[first], data.action[sl0][:k])
    # a collision is never a subgoal: episodes that crashed stop before it
    for sl in data.episode_slices():
        if data.terminated[sl][-1] and data.reward[sl][-1] < -0.5:
            crash = data.next_obs[sl][-1, :2]
            assert not np.any(np.all(np.isclose(out.obs[:, 4:6], crash), axis=1))


def test_subgoal_switches_to_the_goal_once_a_is_visited():
    env = STLNav()
    obs, _ = env.reset(seed=0)
    assert np.allclose(subgoal_obs(env, (30, 80), obs)[4:], [*env.spec.region[:2], 30])
    env.visited_at, env.t = 20, 25
    assert np.allclose(subgoal_obs(env, (30, 80), obs)[4:], [*env.goal, 55])
    env.t = 90  # past the deadline: "now"
    assert subgoal_obs(env, (30, 80), obs)[6] == 1


def test_allocation_search_best_of_n_and_mh_pick_by_the_critic(tpolicy):
    obs0, taus, sat = collect(tpolicy, 20, seed=0, progress=False)
    assert obs0.shape == (20, 6) and taus.shape == (20, 2) and sat.dtype == bool
    prior = Allocations()
    assert all(prior.a_min <= a <= prior.a_max and a + prior.gap <= g <= prior.horizon for a, g in taus)
    critic, fit = train_critic(obs0, taus, sat, steps=5, seed=0)
    assert set(fit) == {"held_out_bce", "held_out_bce_of_the_base_rate", "kept_step"}
    scorer = CriticScorer(critic)
    proc = AllocationProcess(prior)
    res = BestOfN().run(proc, scorer, 8, obs0[0], seed=1)
    v = critic.prob(obs0[0], [c.sample for c in res.candidates])
    assert res.sample == res.candidates[int(np.argmax(v))].sample and res.cost.scorer_calls == 8
    mh = MetropolisHastings(prior).run(proc, scorer, 12, obs0[0], seed=1)
    assert len(mh.candidates) == 12 and 0 <= mh.info["accepted"] <= 11
    assert max(c.score for c in mh.candidates) == pytest.approx(critic.prob(obs0[0], [mh.sample])[0])
    # the condition, not the scorer, says whose start it is: another start scores the same taus otherwise
    other = scorer.score([obs0[1]] * 8, [c.sample for c in res.candidates])
    assert other == pytest.approx(critic.prob(obs0[1], [c.sample for c in res.candidates]).tolist())


def test_tgpo_controller_chooses_once_per_episode_and_counts_scores(tpolicy):
    obs0, taus, sat = collect(tpolicy, 10, seed=0, progress=False)
    critic, _ = train_critic(obs0, taus, np.r_[sat[:-2], True, False], steps=3, seed=0)
    ctl = TGPO(tpolicy, critic=critic, search="bon", budget=4)
    eps = evaluate(STLNav(), ctl, 3, seed=5, progress=False)
    assert all(e.scorer_calls == 4 for e in eps) and len(ctl.chosen) == 3
    assert all(not math.isnan(v) for _, _, v in ctl.chosen.values())
    with pytest.raises(ConfigError, match="scores allocations"):
        TGPO(tpolicy, search="mh")
    with pytest.raises(ConfigError, match="search must be one of 'random', 'bon', 'mh'"):
        TGPO(tpolicy, critic=critic, search="beam")


def test_critic_keeps_the_weights_with_the_lowest_held_out_loss():
    import torch

    rng = np.random.default_rng(0)
    obs0 = rng.normal(size=(60, 6)).astype(np.float32)
    taus = np.stack([rng.integers(10, 61, 60), rng.integers(75, 101, 60)], 1)
    sat = rng.random(60) < 0.5  # noise: anything fitted beyond the base rate overfits
    critic, fit = train_critic(obs0, taus, sat, steps=400, seed=0, check_every=10)
    held = np.random.default_rng(0).permutation(60)[:6]  # the split train_critic draws for seed 0
    with torch.no_grad():
        logit = critic.logit(torch.as_tensor(obs0[held]), torch.as_tensor(taus[held]))
        bce = float(
            torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.as_tensor(sat[held], dtype=torch.float32))
        )
    assert bce == pytest.approx(fit["held_out_bce"], abs=1e-4)  # the kept weights are the ones recorded
    assert fit["kept_step"] < 400  # 400 steps on 54 noisy rows overfit: an earlier state was kept


def test_train_tgpo_writes_a_policy_and_critic_the_controller_loads(tmp_path, data):
    from steerable.control.policies.critics import AllocationCritic
    from steerable.control.policies.diffusion_policy import DiffusionPolicy
    from steerable.control.training.tgpo import TGPOConfig, train_tgpo

    data.save(tmp_path / "d.npz")
    out = tmp_path / "t"
    rec = train_tgpo(TGPOConfig(data=str(tmp_path / "d.npz"), out=str(out), steps=2, rollouts=10, critic_steps=3),
                     progress=False)  # fmt: skip
    assert rec["rollouts"] == 10 and rec["policy_steps"] == 2
    saved = np.load(out / "critic" / "rollouts.npz")
    assert saved["taus"].shape == (10, 2) and rec["satisfied_under_random_tau"] == pytest.approx(
        saved["satisfied"].mean()
    )
    ctl = TGPO(
        DiffusionPolicy.load(out / "policy"), critic=AllocationCritic.load(out / "critic"), search="mh", budget=3
    )
    eps = evaluate(STLNav(), ctl, 1, seed=0, progress=False)
    assert eps[0].scorer_calls == 3
