import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("diffusers")

from steerable.control.evaluate import evaluate, summary  # noqa: E402
from steerable.control.policies.diffusion_policy import DiffusionPolicy  # noqa: E402
from steerable.control.policies.normalize import ActionScale  # noqa: E402
from steerable.control.steering.controller import Controller  # noqa: E402
from steerable.control.steering.rti import RTI  # noqa: E402
from steerable.control.steering.vgps import VGPS  # noqa: E402
from steerable.control.training.bc import PolicyConfig, train_policy, training_chunks  # noqa: E402
from steerable.control.training.iql import TrainQConfig, train_q  # noqa: E402
from steerable.control.worlds.data import DataConfig, make_dataset  # noqa: E402
from steerable.control.worlds.envs import PointNav2D  # noqa: E402
from steerable.errors import ConfigError, IncompatibleArtifactError  # noqa: E402
from steerable.streams import stream  # noqa: E402

SCALE = ActionScale((-1.0, -1.0), (1.0, 1.0))


@pytest.fixture(scope="module")
def data():
    return make_dataset(DataConfig(out="-", episodes=12, seed=0))


@pytest.fixture(scope="module")
def policy(data):
    cfg = PolicyConfig(data="-", out="-", steps=30, hidden=32, layers=1, steps_inference=4, history=2, stride=2)
    return train_policy(cfg, data, SCALE, progress=False)[0]


def test_training_chunks_clamp_to_their_episode(data):
    frames, acts = training_chunks(data, horizon=3, history=2, stride=2, past=2)
    sl = data.episode_slices()[1]
    a = data.action[sl]
    # row 0 of the episode: the past is the first action repeated, the future a_0..a_2
    assert np.array_equal(acts[sl.start], np.stack([a[0], a[0], a[0], a[1], a[2]]))
    # row 5: the past a_1, a_3 (stride 2), then a_5..a_7
    assert np.array_equal(acts[sl.start + 5], np.stack([a[1], a[3], a[5], a[6], a[7]]))
    # the last row: the future is the last action repeated
    assert np.array_equal(acts[sl.stop - 1, 2:], np.stack([a[-1]] * 3))
    # frames at row 3: o_{-1} clamped to o_0, o_1, o_3
    o = data.obs[sl]
    assert np.array_equal(frames[sl.start + 3], np.stack([o[0], o[1], o[3]]))


def test_policy_round_trips_and_samples_reproducibly(policy, tmp_path):
    policy.save(tmp_path / "p", {"note": "test"})
    again = DiffusionPolicy.load(tmp_path / "p")
    cond = policy.condition(np.zeros((3, 6), np.float32))
    a = policy.sample(cond, 4, seed=5)
    b = again.sample(cond, 4, seed=5)
    assert a.shape == (4, 8, 2) and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # rows draw their own noise
    assert a.abs().max() <= 1.0


def test_controllers_count_their_spend_and_reset_per_episode(policy, data):
    env = PointNav2D()
    base = evaluate(env, Controller(policy), 2, seed=0, progress=False)
    # execute 4 of 8: one prediction per 4 env steps (the last one may be cut by the episode's end)
    assert all(e.predictions == -(-e.steps // 4) and e.nfe == 4 * e.predictions for e in base)
    critic = train_q(TrainQConfig(data="-", out="-", steps=3, width=8, chunk=8), data, SCALE, progress=False)
    vgps = VGPS(policy, critic=critic, k=3)
    eps = evaluate(env, vgps, 2, seed=0, progress=False)
    assert all(e.nfe == 3 * 4 * e.predictions and e.scorer_calls == 3 * e.predictions for e in eps)
    rti = RTI(policy, k_prime=2)
    eps = evaluate(env, rti, 2, seed=0, progress=False)
    # one action per prediction; the first prediction of each episode denoises fully (4), later ones K' = 2
    assert all(e.predictions == e.steps and e.nfe == 4 + 2 * (e.predictions - 1) for e in eps)
    row = summary("rti", 2, eps)
    assert row["nfe_per_step"] < 4 and set(row) >= {"method", "budget", "episodes", "success", "return"}


def test_same_seed_same_episodes_whatever_the_batch_and_vgps_picks_the_best_q(policy, data):
    env = PointNav2D()
    a = evaluate(env, Controller(policy), 3, seed=3, progress=False)
    b = evaluate(env, Controller(policy), 3, seed=3, progress=False, batch=1)
    assert [e.ret for e in a] == [e.ret for e in b] and [e.steps for e in a] == [e.steps for e in b]
    critic = train_q(TrainQConfig(data="-", out="-", steps=3, width=8), data, SCALE, progress=False)
    vgps = VGPS(policy, critic=critic, k=5)
    vgps.reset([11, 12])
    envs = [PointNav2D(), PointNav2D()]
    seen = [[e.reset(seed=s)[0]] for e, s in zip(envs, (0, 1), strict=True)]
    act = vgps.act([0, 1], seen, envs)
    for r in (0, 1):
        # the control process's streams: the run's seed stream(episode seed, query), row j, then its query 0
        cond = policy.condition(policy.frames(seen[r])).expand(5, -1)
        streams = [stream(stream(stream(vgps.seeds[r], 0), j), 0) for j in range(5)]
        chunks = policy.future(policy.sample_rows(cond, streams))
        best = chunks[int(np.argmax(vgps.last_q[r]))]
        assert np.allclose(act[r], policy.to_env(best[:4]), atol=1e-6)


def test_method_errors(policy, data):
    critic = train_q(
        TrainQConfig(data="-", out="-", steps=1, width=8), data, ActionScale((-2.0, -2.0), (2.0, 2.0)), progress=False
    )
    with pytest.raises(IncompatibleArtifactError, match="same env"):
        VGPS(policy, critic=critic)
    with pytest.raises(ConfigError, match="needs a critic"):
        VGPS(policy)
    with pytest.raises(ConfigError, match="K' must be in"):
        RTI(policy, k_prime=9)
    with pytest.raises(ConfigError, match="execute must be <= horizon"):
        PolicyConfig(data="-", out="-", execute=9)


def test_dsrl_wrapper_stops_a_chunk_at_termination_and_passes_truncated(policy):
    from steerable.control.training.noise_env import NoiseActionEnv
    from steerable.control.worlds.envs import NavConfig

    nohist = DiffusionPolicy(
        policy.denoiser.__class__(sample_shape=(8, 2), condition_dim=6, hidden=8, layers=1),
        policy.scheduler,
        type(policy.obs_scale)((0.0,) * 6, (1.0,) * 6),
        SCALE,
        8,
        4,
        steps_inference=2,
    )
    env = NoiseActionEnv(PointNav2D(NavConfig(max_steps=6, obstacles=(), wind=0.0, gust=0.0)), nohist)
    env.reset(seed=0)
    w = np.zeros(16, np.float32)
    _, r, term, trunc, _ = env.step(w)
    assert (term, trunc, env.env_steps) == (False, False, 4) and r == pytest.approx(-0.04)
    _, r, term, trunc, _ = env.step(w)  # the time limit falls 2 steps into this chunk
    assert (term, trunc, env.env_steps) == (False, True, 6) and r == pytest.approx(-0.02)
    assert env.nfe == 2 * 2
    # the same noise decodes to the same chunk (DDIM with eta = 0)
    obs, _ = env.reset(seed=1)
    assert np.array_equal(env.decode(obs, w + 0.3), env.decode(obs, w + 0.3))
    assert not np.array_equal(env.decode(obs, w + 0.3), env.decode(obs, w - 0.3))
    # warm-up noise is the base policy's N(0, I), clipped to the box
    draws = np.stack([env.action_space.sample() for _ in range(200)])
    assert abs(draws.std() - 0.9) < 0.1 and np.abs(draws).max() <= 1.5


def test_ptp_keeps_the_candidate_whose_past_matches_the_executed_actions(data):
    from steerable.control.steering.process import Plan
    from steerable.control.steering.ptp import PTP
    from steerable.control.steering.scorers import PastConsistency

    cfg = PolicyConfig(data="-", out="-", steps=2, hidden=16, layers=1, steps_inference=2, history=2, stride=2, past=2)
    pol = train_policy(cfg, data, SCALE, progress=False)[0]
    executed = (np.array([0.5, 0.0]), np.array([0.0, 0.0]), np.array([-0.5, 0.5]))
    # t = 3: past slots are a_{3-4} (none yet) and a_{3-2} = a_1 = (0, 0)
    samples = torch.zeros(3, 2 + 8, 2)
    samples[0, 1] = torch.tensor([0.3, 0.4])  # error 0.25
    samples[1, 1] = torch.tensor([0.1, 0.0])  # error 0.01
    samples[2, 0] = torch.tensor([9.0, 9.0])  # slot without an executed action: ignored
    samples[2, 1] = torch.tensor([0.0, 0.2])  # error 0.04
    plans = [Plan(np.zeros(6, np.float32), (s,), executed) for s in samples]
    scorer = PastConsistency(pol)
    assert scorer.score(["ptp"] * 3, plans) == pytest.approx([-0.25, -0.01, -0.04])
    assert scorer.calls == 3
    # over a real episode: verification runs best-of-M once actions were executed, the plain policy before
    ptp = PTP(pol, m=3)
    eps = evaluate(PointNav2D(), ptp, 2, seed=0, progress=False)
    for e in eps:
        assert e.scorer_calls == 3 * (e.predictions - 1)
        assert e.nfe == 2 * (1 + 3 * (e.predictions - 1))
    with pytest.raises(ConfigError, match="--past"):
        PTP(train_policy(PolicyConfig(data="-", out="-", steps=1, hidden=8, layers=1), data, SCALE, False)[0], m=2)


def test_chunk_robustness_prefers_heading_to_the_open_subgoal_and_guidance_fires(policy):
    from steerable.control.steering.stl_guide import ChunkRobustness, STLGuided, integrate
    from steerable.control.worlds.envs import NavConfig, STLNav

    # integrate matches the env's own dynamics without wind or gusts
    env = STLNav(NavConfig(wind=0.0, gust=0.0))
    env.reset(seed=0)
    pos0, vel0 = torch.tensor(env.pos), torch.tensor(env.vel)
    acts = torch.tensor([[[1.0, 0.5], [0.2, -0.3], [0.0, 1.0]]], dtype=torch.float64)
    for a in acts[0]:
        env.step(a.numpy())
    assert torch.allclose(integrate(pos0, vel0, acts, 0.1, 0.98)[0, -1], torch.tensor(env.pos))
    env.reset(seed=0)
    env.pos = np.array([1.4, 0.9])  # left of region A = (2, 1.05)
    robust = ChunkRobustness(env)
    toward = torch.tensor([[1.0, 0.2]] * 8, dtype=torch.float64)[None]
    away = torch.tensor([[-1.0, -0.2]] * 8, dtype=torch.float64)[None]
    assert robust(toward).item() > robust(away).item()
    env.visited_at = 3  # A done: now the goal is the open subgoal
    assert robust(toward).item() < 0  # the goal is far, whichever way
    guided = STLGuided(policy, last=2, lr=1.0)
    evaluate(STLNav(), guided, 1, seed=0, progress=False)
    assert guided.gradients > 0 and guided.moved > 0


def test_fk_toward_robustness_resamples_and_counts_particles(policy):
    from steerable.control.steering.stl_guide import STLFK
    from steerable.control.worlds.envs import STLNav

    nohist = DiffusionPolicy(
        policy.denoiser.__class__(sample_shape=(8, 2), condition_dim=6, hidden=8, layers=1),
        policy.scheduler,
        type(policy.obs_scale)((0.0,) * 6, (1.0,) * 6),
        SCALE,
        8,
        4,
        steps_inference=4,
    )
    fk = STLFK(nohist, particles=3)
    (ep,) = evaluate(STLNav(), fk, 1, seed=0, progress=False)
    assert ep.nfe == 3 * 4 * ep.predictions and ep.scorer_calls >= 3 * ep.predictions
    assert fk.resamples >= ep.predictions  # at least the final resampling of each prediction


def test_dsrl_alpha_lr_survives_sb3_resetting_learning_rates(tmp_path):
    from steerable.control.training.dsrl import DSRLConfig, train_dsrl

    d = make_dataset(DataConfig(out="-", episodes=4, seed=1))
    cfg = PolicyConfig(data="-", out="-", steps=2, hidden=16, layers=1, steps_inference=2)
    pol, _ = train_policy(cfg, d, SCALE, progress=False)
    pol.save(tmp_path / "p")
    tiny = dict(policy=str(tmp_path / "p"), env_steps=96, learning_starts=8, envs=4, gradient_steps=4, batch_size=8,
                width=8, layers=1, eval_every=0, alpha_init=0.5)  # fmt: skip
    moved = {}
    for alpha_lr in (0.0, 0.05):  # 0: alpha's steps are --lr (3e-4) as SB3's; 0.05 must take effect
        rec = train_dsrl(DSRLConfig(out=str(tmp_path / f"s{alpha_lr}"), alpha_lr=alpha_lr, **tiny), progress=False)
        moved[alpha_lr] = abs(np.log(rec["final"]["alpha"] / 0.5))
    # 24 chunks, 4 updates per 4 chunks after 8 warm-up chunks: about 16 Adam steps of ~lr each on log alpha
    assert moved[0.0] < 16 * 3e-4 * 1.5 + 1e-3 and moved[0.05] > 16 * 0.05 * 0.5


def test_a_policy_run_killed_mid_way_resumes_to_the_uninterrupted_weights(data, tmp_path, monkeypatch):
    from steerable.diffusion.denoiser import MLPDenoiser

    def cfg(out):
        return PolicyConfig(data="-", out=str(out), steps=8, hidden=16, layers=1, batch_size=32, history=1)

    straight = train_policy(cfg(tmp_path / "a"), data, SCALE, progress=False)[0]
    monkeypatch.setattr("steerable.training.CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every step
    forward, calls = MLPDenoiser.forward, []

    def dies_at_the_fifth_step(self, *a, **kw):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("killed")
        return forward(self, *a, **kw)

    monkeypatch.setattr(MLPDenoiser, "forward", dies_at_the_fifth_step)
    with pytest.raises(RuntimeError, match="killed"):
        train_policy(cfg(tmp_path / "b"), data, SCALE, progress=False)
    calls.clear()
    monkeypatch.setattr(MLPDenoiser, "forward", lambda self, *a, **kw: calls.append(1) or forward(self, *a, **kw))
    resumed, record = train_policy(cfg(tmp_path / "b"), data, SCALE, progress=False)
    assert len(calls) == 4 and record["steps"] == 8  # steps 5 to 8: resumed, not started over
    assert not (tmp_path / "b" / "checkpoint.pt").exists()
    for a, b in zip(straight.denoiser.state_dict().values(), resumed.denoiser.state_dict().values(), strict=True):
        assert torch.equal(a, b)
