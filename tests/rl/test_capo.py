"""CAPO: the LM-head curvature model against values computed from scratch, the mask, the loss, a short run."""

import copy
import json

import pytest
import torch

from steerable.rl.capo import AdamMoments, CapoCurvature, CapoShifts, capo_loss, capo_mask, token_shifts
from steerable.rl.core import RLConfig
from steerable.rl.losses import grpo_loss


def _head(seed=0, vocab=3, hidden=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(vocab, hidden, generator=g, dtype=torch.float64), torch.randn(
        hidden, generator=g, dtype=torch.float64
    )


def _from_scratch(w, h, a, adv, lr, direction):
    """ΔJ to second order and the KL, by autograd and explicit matrices: J(W) = A π_W(a|h) / π_old(a|h)."""
    pi_old = torch.softmax(w @ h, -1).detach()

    def surrogate(wf):
        return adv * torch.softmax(wf.view_as(w) @ h, -1)[a] / pi_old[a]

    wf = w.reshape(-1).clone().requires_grad_(True)
    g = torch.autograd.grad(surrogate(wf), wf)[0]  # [V·H]
    d = direction(g.view_as(w)).reshape(-1)
    _, hvp = torch.autograd.functional.hvp(surrogate, wf.detach(), d)
    objective = lr * (g @ d) + 0.5 * lr**2 * (d @ hvp)
    dz = lr * (d.view_as(w) @ h)  # the logit change
    fisher = torch.diag(pi_old) - torch.outer(pi_old, pi_old)  # the softmax Fisher, written out
    v = torch.nn.functional.one_hot(torch.tensor(a), len(pi_old)).double() - pi_old
    return objective, 0.5 * dz @ fisher @ dz, 0.5 * (v @ dz) ** 2, pi_old, dz


@pytest.mark.parametrize("adv", [1.3, -0.7])
def test_sgd_shifts_match_autograd_hessian_and_the_explicit_fisher(adv):
    w, h = _head()
    lr = 0.05
    for a in range(3):
        objective, kl_exact, kl_sampled, pi_old, dz = _from_scratch(w, h, a, adv, lr, lambda g: g)
        args = (h[None], (w @ h)[None], torch.tensor([a]), torch.tensor([adv], dtype=torch.float64), lr)
        exact = token_shifts(*args, kl="exact")
        sampled = token_shifts(*args, kl="sampled")
        assert float(exact.objective[0]) == pytest.approx(float(objective), rel=1e-5)
        assert float(exact.kl[0]) == pytest.approx(float(kl_exact), rel=1e-5)
        assert float(sampled.kl[0]) == pytest.approx(float(kl_sampled), rel=1e-5)
        # and the exact form is the true KL(π_old ‖ π_new) to second order: a tenth of the step, 1/100 the KL
        pi_new = torch.softmax(w @ h + 0.1 * dz, -1)
        true_kl = float((pi_old * (pi_old / pi_new).log()).sum())
        assert 0.01 * float(exact.kl[0]) == pytest.approx(true_kl, rel=0.02)


def test_adam_direction_is_what_torch_adam_would_step_from_the_same_moments():
    w, h = _head(1)
    lr, a, adv = 0.01, 2, 0.9
    torch_w = torch.nn.Parameter(w.clone())
    opt = torch.optim.Adam([torch_w], lr=lr)
    moments = AdamMoments(torch.zeros_like(w), torch.zeros_like(w))
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):  # three batch updates: torch's on the loss gradient, ours on the ascent gradient
        batch_grad = torch.randn(w.shape, generator=gen, dtype=torch.float64)
        torch_w.grad = -batch_grad
        opt.step()
        moments.update(batch_grad)
    pi = torch.softmax(torch_w.detach() @ h, -1)
    g = adv * torch.outer(torch.nn.functional.one_hot(torch.tensor(a), 3).double() - pi, h)
    probe = torch.optim.Adam([torch_w], lr=lr)  # one more step with this token's gradient alone: lr · d
    probe.load_state_dict(copy.deepcopy(opt.state_dict()))
    before = torch_w.detach().clone()
    torch_w.grad = -g
    probe.step()
    d_torch = (torch_w.detach() - before) / lr
    torch_w.data.copy_(before)
    assert torch.allclose(moments.direction(g[None])[0], d_torch, rtol=1e-6, atol=1e-9)
    objective, kl_exact, *_ = _from_scratch(before, h, a, adv, lr, lambda _: d_torch)
    s = token_shifts(h[None], (before @ h)[None], torch.tensor([a]), torch.tensor([adv]).double(), lr, moments, "exact")
    assert float(s.objective[0]) == pytest.approx(float(objective), rel=1e-5)
    assert float(s.kl[0]) == pytest.approx(float(kl_exact), rel=1e-5)


def test_adam_direction_before_any_update_is_the_raw_gradient():
    g = torch.randn(2, 3, 4)
    assert torch.equal(AdamMoments(torch.zeros(3, 4), torch.zeros(3, 4)).direction(g), g)


def test_mask_drops_exactly_the_tokens_outside_the_bounds():
    cfg = RLConfig(capo_kl_max=1e-3, capo_objective_max=0.01)
    objective = torch.tensor([[0.001, 0.02, -0.02, -0.001, 0.005, 0.0]])
    kl = torch.tensor([[1e-4, 1e-4, 1e-4, 1e-4, 2e-3, 1e-4]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    keep, stats = capo_mask(CapoShifts(objective, kl), mask, cfg)
    # too far up, too far down, out of the trust region; the padding is never kept
    assert keep.tolist() == [[True, False, False, True, False, False]]
    assert stats["capo/masked_frac"] == pytest.approx(3 / 5)
    assert stats["capo/masked_trust_region_frac"] == pytest.approx(1 / 5)
    assert stats["capo/masked_objective_decrease_frac"] == pytest.approx(1 / 5)
    assert stats["capo/masked_objective_increase_frac"] == pytest.approx(1 / 5)
    # not symmetric: any decrease is masked (the small one at index 3 too)
    keep, stats = capo_mask(CapoShifts(objective, kl), mask, RLConfig(capo_kl_max=1e-3, capo_symmetric=False))
    assert keep.tolist() == [[True, False, False, False, False, False]]
    assert stats["capo/masked_objective_decrease_frac"] == pytest.approx(2 / 5)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(4, 6, generator=g)).requires_grad_(True)
    old = logp.detach() + 0.1 * torch.randn(4, 6, generator=g)
    adv = torch.randn(4, generator=g)
    mask = torch.ones(4, 6)
    mask[1, 4:] = 0
    return logp, old, adv, mask


def test_with_a_huge_trust_region_and_no_decrease_capo_is_grpo():
    logp, old, adv, mask = _batch()
    cfg = RLConfig(capo_kl_max=1e9, capo_objective_max=1e9)
    shifts = CapoShifts(torch.rand(4, 6), torch.rand(4, 6))  # ΔJ ≥ 0 everywhere
    loss, stats = capo_loss(logp, old, adv, mask, cfg, capo_shifts=shifts)
    ref, _ = grpo_loss(logp, old, adv, mask, cfg)
    (g1,) = torch.autograd.grad(loss, logp)
    (g2,) = torch.autograd.grad(ref, logp)
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), abs=1e-7) and torch.allclose(g1, g2)
    assert stats["capo/masked_frac"] == 0.0


def test_a_masked_token_carries_no_gradient():
    logp, old, adv, mask = _batch(1)
    objective = torch.zeros(4, 6)
    objective[0, 2] = 1.0  # past capo_objective_max
    loss, stats = capo_loss(logp, old, adv, mask, RLConfig(), capo_shifts=CapoShifts(objective, torch.zeros(4, 6)))
    (grad,) = torch.autograd.grad(loss, logp)
    assert float(grad[0, 2]) == 0.0 and bool((grad[0, :2] != 0).all())
    assert stats["capo/masked_frac"] == pytest.approx(1 / float(mask.sum()))


def test_curvature_state_steps_with_the_mean_gradient_of_the_kept_tokens():
    torch.manual_seed(0)
    h, z = torch.randn(1, 3, 4), torch.randn(1, 3, 5)
    actions, adv = torch.tensor([[0, 3, 1]]), torch.tensor([[0.5, 0.5, 0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    curv = CapoCurvature("adam")
    cfg = RLConfig(capo_kl_max=1e9, capo_objective_max=1e9)
    out = curv.shifts(h, z, actions, adv, mask, 0.1, cfg)
    assert float(out.objective[0, 2]) == 0.0 and float(out.kl[0, 2]) == 0.0  # off the mask: nothing predicted
    pi = torch.softmax(z[0, :2], -1)
    v = torch.nn.functional.one_hot(actions[0, :2], 5).float() - pi
    mean_grad = (0.5 * v[:, :, None] * h[0, :2, None, :]).mean(0)
    assert curv.moments.k == 1
    assert torch.allclose(curv.moments.m, 0.1 * mean_grad, atol=1e-7)
    assert torch.allclose(curv.moments.v, 0.001 * mean_grad**2, atol=1e-9)


pytest.importorskip("trl")


@pytest.mark.slow
@pytest.mark.usefixtures("rl_rows_once")
def test_capo_runs_two_steps_on_the_builtin_model_and_logs_its_mask(tmp_path):
    from steerable.rl.run import RLRunConfig, train_rl

    cfg = RLRunConfig(
        out=str(tmp_path), model="builtin", task="builtin:easy", algo="capo", steps=2, minutes=None,
        prompts_per_step=2, group=4, max_completion=24, eval_every=0, eval_n=2, save_every=2, device="cpu",
        lr=3e-4,
    )  # fmt: skip
    assert train_rl(cfg, progress=False)["steps"] == 2
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert len(steps) == 2
    for r in steps:
        assert 0.0 <= r["capo/masked_frac"] <= 1.0
        assert r["capo/masked_frac"] <= (
            r["capo/masked_trust_region_frac"]
            + r["capo/masked_objective_decrease_frac"]
            + r["capo/masked_objective_increase_frac"]
            + 1e-9
        )
        assert r["capo/kl_mean"] >= 0.0  # 0 where every group's rewards are equal: no advantage, no step
