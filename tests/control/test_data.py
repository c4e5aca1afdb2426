import numpy as np
import pytest

pytest.importorskip("gymnasium")

from steerable.control.worlds.data import DataConfig, Dataset, make_dataset  # noqa: E402
from steerable.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def nav_data():
    return make_dataset(DataConfig(out="unused", episodes=60, seed=0))


def test_dataset_is_deterministic_in_its_seed(nav_data, tmp_path):
    again = make_dataset(DataConfig(out="unused", episodes=60, seed=0))
    other = make_dataset(DataConfig(out="unused", episodes=60, seed=1))
    assert np.array_equal(nav_data.action, again.action)
    assert len(other) != len(nav_data) or not np.array_equal(other.action, nav_data.action)
    nav_data.save(tmp_path / "d.npz")
    loaded = Dataset.load(tmp_path / "d.npz")
    assert np.array_equal(loaded.obs, nav_data.obs) and list(loaded.kind) == list(nav_data.kind)


def test_mixture_is_mediocre_with_clean_demos_over_both_gaps(nav_data):
    kinds = list(nav_data.kind)
    assert kinds.count("clean") == 30 and kinds.count("sloppy") == 18 and kinds.count("failing") == 12
    clean = nav_data.kind == "clean"
    assert nav_data.success[clean].mean() > 0.9
    assert nav_data.success[nav_data.kind == "failing"].mean() < 0.4
    assert 0.5 < nav_data.success.mean() < 0.85
    # both modes: clean episodes pass the middle disk (x = 2) above and below
    sides = []
    for sl, k in zip(nav_data.episode_slices(), nav_data.kind, strict=True):
        if k == "clean":
            xy = nav_data.obs[sl, :2]
            sides.append(np.sign(xy[np.argmin(np.abs(xy[:, 0] - 2.0)), 1]))
    assert 0.25 < np.mean(np.array(sides) > 0) < 0.75


def test_transitions_chain_within_episodes_and_end_once(nav_data):
    for sl in nav_data.episode_slices():
        assert np.array_equal(nav_data.next_obs[sl][:-1], nav_data.obs[sl][1:])
        ends = nav_data.terminated[sl] | nav_data.truncated[sl]
        assert ends[-1] and not ends[:-1].any()
    assert np.abs(nav_data.action).max() <= 1.0


def test_pendulum_data_is_near_solved_but_noisy():
    d = make_dataset(DataConfig(out="unused", env="Pendulum-v1", episodes=4, seed=0))
    returns = [d.reward[sl].sum() for sl in d.episode_slices()]
    assert len(d) == 4 * 200 and np.abs(d.action).max() <= 2.0
    assert np.mean(returns) > -600  # the controller swings up; an idle pendulum scores about -1200


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="clean \\+ sloppy"):
        DataConfig(out="x", clean=0.8, sloppy=0.5)
    with pytest.raises(InputError, match="control data"):
        Dataset.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a control dataset"):
        Dataset.load(tmp_path / "bad.npz")


def test_cuenav_demonstrator_pushes_toward_the_cue_behind_the_gate_and_succeeds():
    from steerable.control.worlds.envs import CueNav

    d = make_dataset(DataConfig(out="unused", env="builtin:cuenav", episodes=20, seed=0))
    assert d.success.all() and set(d.kind) == {"clean", "sloppy"}
    sides = []
    for sl in d.episode_slices():
        side = d.obs[sl][0, 5]
        held = d.action[sl][: CueNav.hold_steps]
        assert np.all(d.obs[sl][: CueNav.hold_steps + 1, :2] == d.obs[sl][0, :2])  # the gate held it still
        assert np.sign(held[:, 1].mean()) == side  # ... while it pushed toward the cued side
        assert np.sign(d.obs[sl][-1, 1]) == side  # and it ended on that side
        sides.append(side)
    assert 0.2 < np.mean(np.array(sides) > 0) < 0.8
    assert np.array_equal(d.action, make_dataset(DataConfig(out="u", env="builtin:cuenav", episodes=20, seed=0)).action)
