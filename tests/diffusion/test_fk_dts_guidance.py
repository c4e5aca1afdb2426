import math

import pytest
import torch

pytest.importorskip("diffusers")

from steerable.diffusion.dts import DiffusionTreeSampling, _logmeanexp, _Node  # noqa: E402
from steerable.diffusion.fk import FKSteering  # noqa: E402
from steerable.diffusion.guidance import RewardGuidance  # noqa: E402
from steerable.diffusion.mixture import MixtureReward  # noqa: E402
from steerable.diffusion.registry import make_strategy  # noqa: E402
from steerable.diffusion.worlds import load_world  # noqa: E402
from steerable.errors import ConfigError  # noqa: E402
from steerable.search.best_of_n import BestOfN  # noqa: E402


@pytest.fixture(scope="module")
def world():
    return load_world("builtin:mixture")


def process(world, **kw):
    return world.process(num_steps=kw.pop("num_steps", 20), **kw)


@pytest.mark.parametrize("potential", ["diff", "max", "sum"])
def test_fk_potentials_telescope_to_lambda_times_the_final_reward(world, potential):
    # no resampling on the way (adaptive, threshold below any ESS): the carried weights must end as softmax(lam r(x0))
    fk = FKSteering(lam=3.0, potential=potential, adaptive=True, ess_threshold=1e-9, resample_every=4, t_start=4)
    res = fk.run(process(world), world.reward, 6, "", seed=1)
    assert res.info["resamples"] == 0 and len(res.info["schedule"]) == 5
    r = torch.tensor([c.score for c in res.candidates], dtype=torch.float64)
    w = torch.tensor([c.weight for c in res.candidates], dtype=torch.float64)
    assert torch.allclose(w, torch.softmax(3.0 * r, 0), atol=1e-9)


def test_fk_resamples_at_every_scheduled_step_and_costs_particles_times_steps(world):
    p = process(world)
    res = FKSteering(resample_every=5, t_start=5, t_end=15).run(p, world.reward, 4, "", seed=0)
    assert res.info["schedule"] == [5, 10, 15, 20]
    assert res.info["resampled_at"] == [5, 10, 15, 20]
    assert res.cost.nfe == 4 * 20
    assert res.cost.scorer_calls == 4
    assert res.sample.shape == (2,)


def test_fk_moves_samples_toward_the_reward_at_equal_nfe(world):
    p = process(world)
    fk = [FKSteering(lam=10.0).run(p, world.reward, 8, "", seed=s).sample for s in range(12)]
    plain = [BestOfN().run(p, world.reward, 1, "", seed=s).sample for s in range(12)]
    r = lambda xs: world.reward.reward([""] * len(xs), torch.stack(xs)).mean().item()  # noqa: E731
    assert r(fk) > r(plain) + 0.05


def test_fk_refuses_a_deterministic_sampler(world):
    with pytest.raises(ConfigError, match="eta"):
        FKSteering().run(process(world, eta=0.0), world.reward, 4, "", seed=0)


def test_fk_options_are_checked():
    with pytest.raises(ConfigError, match="potential"):
        make_strategy("fk", lambda s: None, {"potential": "min"})
    with pytest.raises(ConfigError, match="lam"):
        make_strategy("fk", lambda s: None, {"lam": -1})
    assert make_strategy("fk", lambda s: None, {"lam": 2}).lam == 2.0


def test_soft_value_backup_by_hand():
    root = _Node(None, None, -1)
    a = _Node(None, root, 10, known=True)
    root.children.append(a)
    leaves = [_Node(None, a, 20, value=v, known=True, done=True, reward=v) for v in (-1.0, -3.0)]
    a.children += leaves
    dts = DiffusionTreeSampling(lam=2.0)
    dts._backup([root, a, leaves[0]])
    want = math.log((math.exp(-2.0) + math.exp(-6.0)) / 2) / 2.0
    assert a.value == pytest.approx(want)
    assert root.value == pytest.approx(want)  # one child: the mean is that child
    assert _logmeanexp([0.0, 0.0], 5.0) == pytest.approx(0.0)


def test_dts_with_the_papers_widening_is_best_of_n_at_small_budgets(world):
    res = DiffusionTreeSampling().run(process(world), world.reward, 8, "", seed=0)
    assert res.info["expansions_below_root"] == 0
    assert res.info["root_children"] == 8 and res.cost.nfe == 8 * 20


def test_dts_branches_below_the_root_and_shares_prefixes(world):
    res = DiffusionTreeSampling(widen_c=1.0, widen_alpha=0.5, branch_every=5).run(
        process(world), world.reward, 8, "", seed=0
    )
    assert res.info["expansions_below_root"] > 0
    assert res.cost.nfe <= 8 * 20
    assert res.info["rollouts"] > res.info["root_children"]
    assert len(res.candidates) == res.info["rollouts"]
    assert res.cost.nfe < res.info["rollouts"] * 20  # rollouts below the root paid only their suffix
    assert sum(c.weight for c in res.candidates) == pytest.approx(1.0)  # DTS: the walk's distribution
    xs = torch.stack([c.sample for c in res.candidates])
    assert torch.cdist(xs, xs).add(torch.eye(len(xs))).min() > 0  # siblings drew their own noise


def test_dts_star_answers_the_best_x0_and_batches_leaves(world):
    dts = DiffusionTreeSampling(greedy=True, widen_c=1.0, widen_alpha=0.5, branch_every=5, leaf_batch=3)
    res = dts.run(process(world), world.reward, 6, "", seed=2)
    assert res.method == "dts-star"
    assert res.info["expansions_below_root"] > 0
    assert res.cost.nfe <= 6 * 20
    best = max(res.candidates, key=lambda c: c.score)
    assert torch.equal(res.sample, best.sample)


def test_guidance_log_ratio_is_the_two_gaussians_density_ratio(world):
    p = process(world, guidance=RewardGuidance(world.reward, scale=5.0))
    s = p.init("", 3, seed=0)
    p.propose(s, steps=3)
    x, index = s.x.clone(), s.index.clone()
    eps = p.denoiser(x, p.timestep(index)).sample
    s.log_ratio.zero_()  # the three steps before added theirs
    p.propose(s)
    # by hand: mu_p from the model's eps, mu_q from the guided eps, x' the state reached
    mu_p = p.ddim_step(eps, index, x)[0].double()
    mu_q = p.ddim_step(_guided(p, world, x, index), index, x)[0].double()
    sigma = p.sigma(index).double()[:, None]
    normal = torch.distributions.Normal
    want = (normal(mu_p, sigma).log_prob(s.x.double()) - normal(mu_q, sigma).log_prob(s.x.double())).sum(1)
    assert torch.allclose(s.log_ratio, want, atol=1e-4)
    assert p.backward_passes == 4


def _guided(p, world, x, index):
    x = x.clone().requires_grad_(True)
    eps = p.denoiser(x, p.timestep(index)).sample
    _, x0 = p.ddim_step(eps, index, x)
    (grad,) = torch.autograd.grad(world.reward.reward([""] * len(x), x0).sum(), x)
    abar = p.abar(index)[:, None]
    return (eps - 5.0 * (1 - abar).sqrt() * grad).detach()


def test_guidance_raises_the_reward_and_needs_a_differentiable_scorer(world):
    plain = process(world)
    guided = process(world, guidance=RewardGuidance(world.reward, scale=10.0))
    a = BestOfN().run(plain, world.reward, 64, "", seed=0)
    b = BestOfN().run(guided, world.reward, 64, "", seed=0)
    mean = lambda res: sum(c.score for c in res.candidates) / len(res.candidates)  # noqa: E731
    assert mean(b) > mean(a) + 0.05

    class Opaque(MixtureReward):
        reward = None

    with pytest.raises(ConfigError, match="differentiable"):
        process(world, guidance=RewardGuidance(Opaque()))


def test_fk_with_guidance_reuses_its_weighing_pass_and_answers_as_if_it_ran_again(world, monkeypatch):
    """FK's weighing previews x0 before a guided step; that pass is the guided step's own (with the gradient), so
    a particle costs num_steps NFE, not num_steps + weighings, and the samples are those of a second pass."""
    fk = FKSteering(lam=3.0, resample_every=5, t_start=5, t_end=15)
    reused = fk.run(process(world, guidance=RewardGuidance(world.reward, scale=5.0)), world.reward, 4, "", seed=0)
    assert reused.cost.nfe == 4 * 20 and reused.info["resamples"] > 0

    real_step = RewardGuidance.step

    def forgetful(self, p, state, live):  # the old behaviour: every guided step runs the denoiser again
        state.graded[live] = False
        real_step(self, p, state, live)

    monkeypatch.setattr(RewardGuidance, "step", forgetful)
    again = fk.run(process(world, guidance=RewardGuidance(world.reward, scale=5.0)), world.reward, 4, "", seed=0)
    assert again.cost.nfe == 4 * (20 + 3)  # three weighings before the last step
    assert torch.allclose(reused.sample, again.sample, atol=1e-5)
    assert [c.score for c in reused.candidates] == pytest.approx([c.score for c in again.candidates], abs=1e-5)


def _counting(p, monkeypatch):
    """``p`` with its denoiser's calls recorded (rows per call); the shared denoiser is restored after the test."""
    calls = []
    forward = p.denoiser.forward
    monkeypatch.setattr(p.denoiser, "forward", lambda *a, **k: calls.append(len(a[0])) or forward(*a, **k))
    return p, calls


@pytest.mark.parametrize("greedy", [False, True])
def test_dts_leaf_batch_gives_the_sequential_tree_where_selection_reads_no_value(world, greedy, monkeypatch):
    # the paper's C, alpha at 8 rollouts: the root widens on every visit, so no selection reads a value and a
    # pool of 8 must build the sequential tree, spending the same NFE in 20 batched calls instead of 160
    p, calls = _counting(process(world), monkeypatch)
    seq = DiffusionTreeSampling(greedy=greedy).run(p, world.reward, 8, "", seed=3)
    assert calls == [1] * 160
    calls.clear()
    bat = DiffusionTreeSampling(greedy=greedy, leaf_batch=8).run(process(world), world.reward, 8, "", seed=3)
    assert calls == [8] * 20
    assert seq.cost.nfe == bat.cost.nfe == 8 * 20
    # the same leaves, up to the last bits a batched matmul may change
    assert torch.allclose(seq.sample, bat.sample, atol=1e-5)
    for a, b in zip(seq.candidates, bat.candidates, strict=True):
        assert torch.allclose(a.sample, b.sample, atol=1e-5) and a.weight == pytest.approx(b.weight, abs=1e-4)


def test_dts_leaf_pool_branches_within_the_budget_in_fewer_calls(world, monkeypatch):
    p, calls = _counting(process(world), monkeypatch)
    res = DiffusionTreeSampling(widen_c=1.0, widen_alpha=0.5, branch_every=5, leaf_batch=6).run(
        p, world.reward, 12, "", seed=0
    )
    assert res.info["expansions_below_root"] > 0
    assert sum(calls) == res.cost.nfe <= 12 * 20  # every row of every call counted, within the cap
    assert max(calls) > 1 and len(calls) < res.cost.nfe  # rows from different leaves shared calls
    assert len(res.candidates) == res.info["rollouts"]
