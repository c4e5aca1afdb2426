import json

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("diffusers")

from steerable.control.policies.diffusion_policy import DiffusionPolicy  # noqa: E402
from steerable.control.policies.normalize import ActionScale  # noqa: E402
from steerable.control.training.bc import PolicyConfig, train_policy  # noqa: E402
from steerable.control.training.gorl import GoRLConfig, best_episodes, collect_latent_rollouts, train_gorl  # noqa: E402
from steerable.control.worlds.data import DataConfig, Dataset, make_dataset  # noqa: E402
from steerable.errors import ConfigError  # noqa: E402

SCALE = ActionScale((-1.0, -1.0), (1.0, 1.0))


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory):
    d = make_dataset(DataConfig(out="-", episodes=4, seed=1))
    pol, _ = train_policy(PolicyConfig(data="-", out="-", steps=2, hidden=8, layers=1, steps_inference=2), d, SCALE,
                          progress=False)  # fmt: skip
    path = tmp_path_factory.mktemp("gorl") / "p"
    pol.save(path)
    return path


def test_rollouts_record_the_decoded_actions_the_latent_policy_chose(decoder_dir):
    class Fixed:  # a latent policy that always picks the same noise
        def predict(self, obs, deterministic=False):
            return np.full((1, 16), 0.7, np.float32), None

    dec = DiffusionPolicy.load(decoder_dir)
    data = collect_latent_rollouts("builtin:pointnav", dec, Fixed(), episodes=2, seed=3)
    assert data.episodes == 2 and len(data) == int(np.sum(np.bincount(data.episode)))
    # the first 4 actions are the chunk that noise decodes to at the first observation
    from steerable.control.training.noise_env import NoiseActionEnv
    from steerable.control.worlds.envs import make_env

    env = NoiseActionEnv(make_env("builtin:pointnav"), dec)
    obs, _ = env.reset(seed=3 * 1_000_003)
    assert np.allclose(data.obs[0], obs)
    assert np.allclose(data.action[:4], env.decode(obs, np.full(16, 0.7, np.float32))[:4], atol=1e-6)
    # an episode ends at its termination or time limit, never past it
    ends = np.flatnonzero(data.terminated | data.truncated)
    assert len(ends) == 2 and ends[-1] == len(data) - 1


def test_gorl_alternates_fresh_latent_rl_and_decoder_refits(tmp_path, decoder_dir):
    cfg = GoRLConfig(policy=str(decoder_dir), out=str(tmp_path / "g"), stages=2, stage_steps=64, rollouts=2,
                     decoder_steps=2, eval_episodes=1, gate=False)  # fmt: skip
    rec = train_gorl(cfg, progress=False)
    assert [s["stage"] for s in rec["stages"]] == [0, 1] and json.loads((tmp_path / "g" / "gorl.json").read_text())
    for k in (0, 1):
        assert (tmp_path / "g" / f"stage_{k}" / "latent" / "sac.zip").exists()
        made = json.loads((tmp_path / "g" / f"stage_{k}" / "decoder" / "training.json").read_text())
        assert made["steps"] == 2 and f"stage {k}" in made["data_made_by"]
    # stage 1's latent policy was trained on stage 0's refitted decoder
    latent1 = json.loads((tmp_path / "g" / "stage_1" / "latent" / "training.json").read_text())
    assert latent1["config"]["policy"] == str(tmp_path / "g" / "stage_0" / "decoder")


def test_the_gate_refits_the_decoder_only_after_a_latent_policy_that_beat_it(tmp_path, decoder_dir):
    cfg = GoRLConfig(policy=str(decoder_dir), out=str(tmp_path / "g"), stages=2, stage_steps=64, rollouts=2,
                     decoder_steps=2, eval_episodes=1, select_episodes=4)  # fmt: skip
    rec = train_gorl(cfg, progress=False)
    latent1 = json.loads((tmp_path / "g" / "stage_1" / "latent" / "training.json").read_text())
    s0 = rec["stages"][0]
    assert s0["refit"] == (s0["select_latent"] > s0["select_decoder"])
    assert (tmp_path / "g" / "stage_0" / "decoder").exists() == s0["refit"]
    steered = str(tmp_path / "g" / "stage_0" / "decoder") if s0["refit"] else str(decoder_dir)
    assert latent1["config"]["policy"] == steered  # a held decoder is the one the next stage steers
    assert s0["rollout_env_steps"] == 0 or s0["refit"]  # no rollouts are spent on a refit that does not happen
    spent = sum(r["env_steps"] + r["rollout_env_steps"] + r["select_env_steps"] for r in rec["stages"])
    assert rec["env_steps"] == spent and all(r["select_env_steps"] > 0 for r in rec["stages"])


def test_best_episodes_keeps_the_highest_returns_in_order_and_renumbers_them():
    # three episodes of lengths 2, 1, 3 with returns 1, 3, 2
    reward = np.array([0.5, 0.5, 3.0, 1.0, 0.5, 0.5], np.float32)
    ep = np.array([0, 0, 1, 2, 2, 2])
    d = Dataset(obs=np.arange(6, dtype=np.float32)[:, None], action=np.zeros((6, 2), np.float32), reward=reward,
                next_obs=np.zeros((6, 1), np.float32), terminated=np.zeros(6, bool), truncated=np.zeros(6, bool),
                episode=ep, kind=np.array(["a", "b", "c"]), success=np.array([False, True, False]))  # fmt: skip
    top = best_episodes(d, 0.5)  # ceil(1.5) = 2 episodes: the returns 3 and 2, kept in their order
    assert top.obs[:, 0].tolist() == [2, 3, 4, 5] and top.episode.tolist() == [0, 1, 1, 1]
    assert top.kind.tolist() == ["b", "c"] and top.success.tolist() == [True, False]
    assert best_episodes(d, 1.0).obs[:, 0].tolist() == list(range(6))
    assert best_episodes(d, 0.01).kind.tolist() == ["b"]


def test_gorl_refuses_a_history_decoder(tmp_path):
    d = make_dataset(DataConfig(out="-", episodes=2, seed=1))
    pol, _ = train_policy(PolicyConfig(data="-", out="-", steps=1, hidden=8, layers=1, history=2), d, SCALE,
                          progress=False)  # fmt: skip
    pol.save(tmp_path / "h")
    with pytest.raises(ConfigError, match="history 0"):
        train_gorl(GoRLConfig(policy=str(tmp_path / "h"), out=str(tmp_path / "o")), progress=False)
    with pytest.raises(ConfigError, match="stages must be >= 1"):
        GoRLConfig(policy="p", out="o", stages=0)
    with pytest.raises(ConfigError, match="refit_top"):
        GoRLConfig(policy="p", out="o", refit_top=0)
