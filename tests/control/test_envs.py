from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from steerable.control.worlds.envs import (  # noqa: E402
    CUE_CONFIG,
    CueNav,
    MemoryNav,
    NavConfig,
    PointNav2D,
    STLNav,
    make_env,
)
from steerable.errors import ConfigError  # noqa: E402


def test_dynamics_match_the_equations_by_hand():
    env = PointNav2D(NavConfig(wind=0.0, gust=0.0))
    env.reset(seed=0)
    p0 = env.pos.copy()
    env.step([1.0, -0.5])
    # v = 0.98 * 0 + 0.1 * a;  p = p0 + 0.1 * v
    assert np.allclose(env.vel, [0.1, -0.05])
    assert np.allclose(env.pos, p0 + 0.1 * np.array([0.1, -0.05]))
    env.step([2.0, 0.0])  # clipped to 1
    assert np.allclose(env.vel, [0.98 * 0.1 + 0.1, 0.98 * -0.05])


def test_rewards_terminated_and_truncated_are_apart():
    env = PointNav2D(NavConfig(wind=0.0, gust=0.0, max_steps=3, obstacles=()))
    env.reset(seed=1)
    rewards, flags = [], []
    for _ in range(3):
        _, r, term, trunc, info = env.step([0.0, 0.0])
        rewards.append(r)
        flags.append((term, trunc))
    assert rewards == pytest.approx([-0.01] * 3)
    assert flags == [(False, False), (False, False), (False, True)]
    assert info["outcome"] == "timeout" and not info["success"]
    with pytest.raises(ConfigError, match="reset"):
        env.step([0.0, 0.0])


def test_collision_and_goal_end_the_episode_with_their_rewards():
    env = PointNav2D(NavConfig(wind=0.0, gust=0.0))
    env.reset(seed=0)
    env.pos = np.array([1.15, 0.0])  # just left of the middle disk (edge at x = 1.2)
    env.vel = np.array([1.0, 0.0])
    _, r, term, trunc, info = env.step([1.0, 0.0])
    assert (term, trunc, info["outcome"]) == (True, False, "collision") and r == pytest.approx(-1.01)
    env.reset(seed=0)
    env.pos = env.goal - np.array([0.35, 0.0])
    env.vel = np.array([1.0, 0.0])
    _, r, term, _, info = env.step([0.0, 0.0])
    assert term and info["success"] and r == pytest.approx(0.99)


def test_clone_and_state_fork_the_future_exactly():
    env = PointNav2D()
    env.reset(seed=3)
    for _ in range(5):
        env.step([0.3, 0.2])
    fork = env.clone()
    saved = env.get_state()
    a = [env.step([0.5, -0.5])[0] for _ in range(10)]
    b = [fork.step([0.5, -0.5])[0] for _ in range(10)]
    assert np.array_equal(np.stack(a), np.stack(b))  # same gusts: the random stream was copied
    env.set_state(saved)
    c = [env.step([0.5, -0.5])[0] for _ in range(10)]
    assert np.array_equal(np.stack(a), np.stack(c))


def test_reset_seed_is_deterministic_and_seeds_differ():
    env = PointNav2D()
    o1, _ = env.reset(seed=5)
    o2, _ = env.reset(seed=5)
    o3, _ = env.reset(seed=6)
    assert np.array_equal(o1, o2) and not np.array_equal(o1, o3)


def test_memorynav_cue_is_shown_only_at_first_and_wrong_goal_fails():
    env = MemoryNav()
    obs, _ = env.reset(seed=0, options={"side": -1.0})
    assert obs[5] == -1.0
    for _ in range(env.cue_steps):
        obs, *_ = env.step([0.0, 0.0])
    assert obs[5] == 0.0
    env.pos = np.array([env.config.goal[0] - 0.05, +env.goal_offset])  # at the decoy (upper) goal
    _, r, term, trunc, info = env.step([0.0, 0.0])
    assert term and not trunc and info["outcome"] == "wrong goal" and not info["success"]


def test_stlnav_reports_satisfaction_only_when_a_was_visited_in_time():
    env = STLNav(NavConfig(wind=0.0, gust=0.0, goal_spread=0.0))
    env.reset(seed=0)
    env.pos = np.array(env.spec.region[:2])  # inside A
    env.step([0.0, 0.0])
    assert env.visited_at == 1
    env.pos = env.goal.copy()
    _, _, term, _, info = env.step([0.0, 0.0])
    assert term and info["satisfied"]
    env.reset(seed=0)
    env.pos = env.goal.copy()
    _, _, term, _, info = env.step([0.0, 0.0])
    assert term and info["success"] and not info["satisfied"]


def test_bad_config_and_env_names_are_one_line_errors():
    with pytest.raises(ConfigError, match="nav: dt must be > 0"):
        NavConfig(dt=0.0)
    with pytest.raises(ConfigError, match="radius > 0"):
        NavConfig(obstacles=((1.0, 1.0, -1.0),))
    with pytest.raises(ConfigError, match="unknown env"):
        make_env("builtin:nowhere")


def test_cuenav_gate_holds_the_agent_then_moves_it_by_the_equations():
    env = CueNav(replace(CUE_CONFIG, wind=0.0, gust=0.0))
    obs, _ = env.reset(seed=0, options={"side": 1.0})
    start = env.pos.copy()
    cues = [obs[5]]
    for _ in range(env.hold_steps):
        obs, r, term, trunc, _ = env.step([1.0, 1.0])
        cues.append(obs[5])
        assert np.array_equal(env.pos, start) and np.array_equal(env.vel, [0.0, 0.0])
        assert r == pytest.approx(-0.01) and not term and not trunc
    # the cue shows at t = 0..7 (the observations before the first 8 steps), then never again
    assert cues[: env.cue_steps] == [1.0] * env.cue_steps and set(cues[env.cue_steps :]) == {0.0}
    env.step([1.0, 1.0])  # the gate is open: v = 0.1 * a, p = p0 + 0.1 * v
    assert env.vel == pytest.approx([0.1, 0.1]) and env.pos == pytest.approx(start + 0.01)
    env.step([1.0, -1.0])  # v = 0.98 * v + 0.1 * a
    assert env.vel == pytest.approx([0.198, -0.002]) and env.pos == pytest.approx(start + [0.0298, 0.0098])


def test_cuenav_cue_leaves_no_trace_in_the_observations_only_in_the_actions():
    """Same seed, opposite sides, each pushed toward its own side: after the cue, every observation until the
    gate opens is the same, so a 10-frame window 2 steps apart that ends there holds no cue."""
    traces = []
    for side in (1.0, -1.0):
        env = CueNav()
        obs, _ = env.reset(seed=3, options={"side": side})
        seen = [obs]
        for _ in range(env.hold_steps):
            seen.append(env.step([0.8, side])[0])
        traces.append(np.stack(seen))
    up, down = traces
    assert up[0, 5] == 1.0 and down[0, 5] == -1.0
    assert np.array_equal(up[CueNav.cue_steps :], down[CueNav.cue_steps :])
    assert CueNav.cue_steps + 10 * 2 <= CueNav.hold_steps
    assert isinstance(make_env("builtin:cuenav"), CueNav)


def test_cuenav_wrong_goal_fails_and_cued_goal_succeeds():
    env = CueNav(replace(CUE_CONFIG, wind=0.0, gust=0.0))
    for at, outcome in ((-1.0, "wrong goal"), (1.0, "goal")):
        env.reset(seed=0, options={"side": 1.0})
        env.t = env.hold_steps  # past the gate
        env.pos = np.array([env.config.goal[0] - 0.05, at * env.goal_offset])
        _, _, term, _, info = env.step([0.0, 0.0])
        assert term and info["outcome"] == outcome and info["success"] == (outcome == "goal")
