import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")

from steerable.control.policies.critics import IQLCritic  # noqa: E402
from steerable.control.policies.normalize import ActionScale, require_same  # noqa: E402
from steerable.control.training.iql import TrainQConfig, chunk_targets, train_q  # noqa: E402
from steerable.control.worlds.data import Dataset  # noqa: E402
from steerable.errors import ConfigError, IncompatibleArtifactError, InputError  # noqa: E402

SCALE = ActionScale((-1.0, -1.0), (1.0, 1.0))


def _dataset(rows, ends):
    """rows: (obs, action, reward); ends: per row 't' (terminated), 'T' (truncated) or ''."""
    obs = np.array([r[0] for r in rows], np.float32)
    nxt = np.roll(obs, -1, axis=0)
    ep, e = [], 0
    for end in ends:
        ep.append(e)
        e += bool(end)
    return Dataset(
        obs=obs,
        action=np.array([r[1] for r in rows], np.float32),
        reward=np.array([r[2] for r in rows], np.float32),
        next_obs=nxt,
        terminated=np.array([x == "t" for x in ends]),
        truncated=np.array([x == "T" for x in ends]),
        episode=np.array(ep),
        kind=np.array(["x"] * e),
        success=np.zeros(e, bool),
    )


def test_chunk_targets_by_hand():
    rows = [([float(i), 0.0], [0.1 * i, 0.0], float(i + 1)) for i in range(5)]
    d = _dataset(rows, ["", "", "t", "", "T"])  # episodes: rows 0-2 (terminated), rows 3-4 (truncated)
    t = chunk_targets(d, chunk=2, gamma=0.5)
    # row 0: r0 + 0.5 r1 = 1 + 1 = 2, bootstrap from next_obs[1] with 0.5^2
    assert t["ret"][0] == pytest.approx(2.0) and t["boot_disc"][0] == pytest.approx(0.25)
    assert np.array_equal(t["boot_obs"][0], d.next_obs[1])
    # row 1: r1 + 0.5 r2 = 2 + 1.5, ends in termination: no bootstrap
    assert t["ret"][1] == pytest.approx(3.5) and t["boot_disc"][1] == 0.0
    # row 2: only one step left; the chunk repeats its last action
    assert t["ret"][2] == pytest.approx(3.0) and t["boot_disc"][2] == 0.0
    assert np.allclose(t["actions"][2], [[0.2, 0.0], [0.2, 0.0]])
    # row 4: truncated, not terminated: bootstrap with gamma^1
    assert t["ret"][4] == pytest.approx(5.0) and t["boot_disc"][4] == pytest.approx(0.5)


def test_iql_value_is_the_expectile_of_q_on_a_two_action_bandit():
    # one state, actions -0.5 (reward 0) and +0.5 (reward 1), each episode one terminal step:
    # Q(a) = r(a) and V = the tau-expectile of {0, 1} at 50/50, which is tau itself
    rows = [([0.0, 0.0], [(-0.5 if i % 2 == 0 else 0.5), 0.0], float(i % 2)) for i in range(64)]
    d = _dataset(rows, ["t"] * 64)
    cfg = TrainQConfig(data="-", out="-", expectile=0.8, steps=400, batch_size=64, lr=3e-3, width=16, depth=1)
    critic = train_q(cfg, d, SCALE, progress=False)
    s = torch.zeros(2, 2)
    with torch.no_grad():
        q = critic.q(s, torch.tensor([[[-0.5, 0.0]], [[0.5, 0.0]]]))
        v = critic.value(s[:1])
    assert q.tolist() == pytest.approx([0.0, 1.0], abs=0.1)
    assert v.item() == pytest.approx(0.8, abs=0.1)


def test_critic_round_trips_through_disk_and_records_what_it_scores(tmp_path):
    rows = [([float(i % 3), 1.0], [0.1, -0.1], 0.0) for i in range(12)]
    d = _dataset(rows, ["", "", "t"] * 4)
    critic = train_q(TrainQConfig(data="-", out="-", chunk=2, steps=5, width=8), d, SCALE, progress=False)
    critic.save(tmp_path / "c", critic.record)
    again = IQLCritic.load(tmp_path / "c")
    s, a = torch.randn(3, 2), torch.rand(3, 4, 2)
    with torch.no_grad():
        assert torch.equal(critic.q(s, a), again.q(s, a))
    assert again.chunk == 2 and critic.record["scores"] == "whole chunk of 2"


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="expectile must be > 0.5"):
        TrainQConfig(data="-", out="-", expectile=0.3)
    with pytest.raises(InputError, match="train-q"):
        IQLCritic.load(tmp_path)
    with pytest.raises(IncompatibleArtifactError, match="same env"):
        require_same(SCALE, ActionScale((-2.0,), (2.0,)), "vgps")
