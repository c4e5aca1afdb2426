import json

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("diffusers")

from steerable.control.policies.diffusion_policy import DiffusionPolicy  # noqa: E402
from steerable.control.policies.normalize import ActionScale  # noqa: E402
from steerable.control.training.bc import PolicyConfig, train_policy  # noqa: E402
from steerable.control.training.gorl import GoRLConfig, collect_latent_rollouts, train_gorl  # noqa: E402
from steerable.control.worlds.data import DataConfig, make_dataset  # noqa: E402
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
                     decoder_steps=2, eval_episodes=1)  # fmt: skip
    rec = train_gorl(cfg, progress=False)
    assert [s["stage"] for s in rec["stages"]] == [0, 1] and json.loads((tmp_path / "g" / "gorl.json").read_text())
    for k in (0, 1):
        assert (tmp_path / "g" / f"stage_{k}" / "latent" / "sac.zip").exists()
        made = json.loads((tmp_path / "g" / f"stage_{k}" / "decoder" / "training.json").read_text())
        assert made["steps"] == 2 and f"stage {k}" in made["data_made_by"]
    # stage 1's latent policy was trained on stage 0's refitted decoder
    latent1 = json.loads((tmp_path / "g" / "stage_1" / "latent" / "training.json").read_text())
    assert latent1["config"]["policy"] == str(tmp_path / "g" / "stage_0" / "decoder")


def test_gorl_refuses_a_history_decoder(tmp_path):
    d = make_dataset(DataConfig(out="-", episodes=2, seed=1))
    pol, _ = train_policy(PolicyConfig(data="-", out="-", steps=1, hidden=8, layers=1, history=2), d, SCALE,
                          progress=False)  # fmt: skip
    pol.save(tmp_path / "h")
    with pytest.raises(ConfigError, match="history 0"):
        train_gorl(GoRLConfig(policy=str(tmp_path / "h"), out=str(tmp_path / "o")), progress=False)
    with pytest.raises(ConfigError, match="stages must be >= 1"):
        GoRLConfig(policy="p", out="o", stages=0)
