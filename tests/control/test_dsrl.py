import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from steerable.control.policies.normalize import ActionScale  # noqa: E402
from steerable.control.training.bc import PolicyConfig, train_policy  # noqa: E402
from steerable.control.training.dsrl import DSRLConfig, buffer_returns, train_dsrl  # noqa: E402
from steerable.control.worlds.data import DataConfig, make_dataset  # noqa: E402

SCALE = ActionScale((-1.0, -1.0), (1.0, 1.0))


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    d = make_dataset(DataConfig(out="-", episodes=4, seed=1))
    pol, _ = train_policy(PolicyConfig(data="-", out="-", steps=2, hidden=16, layers=1, steps_inference=2), d, SCALE,
                          progress=False)  # fmt: skip
    out = tmp_path_factory.mktemp("dsrl") / "p"
    pol.save(out)
    return str(out)


def _weights(path) -> dict:
    from stable_baselines3.common.save_util import load_from_zip_file

    return load_from_zip_file(path, device="cpu")[1]["policy"]  # actor, critics and target critics


def test_two_runs_with_one_seed_give_the_same_curve_and_weights(policy_dir, tmp_path):
    # 2 envs x 400 steps: every env times out (100 steps) during the warm-up, so SB3's auto-resets (seed None)
    # happen while the warm-up sampler draws; they used to reseed it from OS entropy
    tiny = dict(policy=policy_dir, env_steps=800, learning_starts=400, envs=2, gradient_steps=2, batch_size=16,
                width=16, layers=1, eval_episodes=2, seed=3)  # fmt: skip
    runs = [train_dsrl(DSRLConfig(out=str(tmp_path / n), eval_every=200, **tiny), progress=False) for n in "ab"]
    quiet = train_dsrl(DSRLConfig(out=str(tmp_path / "c"), eval_every=0, **tiny), progress=False)
    a, b = ([{k: v for k, v in p.items() if k != "seconds"} for p in r["curve"]] for r in runs)
    assert len(a) == 5 and a == b
    assert runs[0]["final"] == runs[1]["final"] == quiet["final"]  # the checks do not move training's RNG
    wa, wb, wc = (_weights(tmp_path / n / "sac.zip") for n in "abc")
    assert len(wa) > 10
    for k in wa:
        assert torch.equal(wa[k], wb[k]) and torch.equal(wa[k], wc[k]), k


def test_buffer_returns_are_discounted_to_each_episode_end():
    from types import SimpleNamespace

    rewards = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 5.0], [4.0, 0.0]], np.float32)
    dones = np.array([[0, 0], [1, 0], [0, 1], [0, 0]], np.float32)
    g, valid = buffer_returns(SimpleNamespace(pos=4, n_envs=2, rewards=rewards, dones=dones), 0.5)
    # env 0: episode rows 0-1 (1 + 0.5 * 2 = 2, then 2); rows 2-3 are still open
    # env 1: episode rows 0-2 (0 + 0.5 * (0 + 0.5 * 5) = 1.25, 2.5, 5); row 3 open
    assert valid.tolist() == [[True, True], [True, True], [False, True], [False, False]]
    assert g[:2, 0].tolist() == [2.0, 2.0] and g[:3, 1].tolist() == [1.25, 2.5, 5.0]
