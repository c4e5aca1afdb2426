"""Advantages and losses against hand-computed values on small tensors."""

import math

import pytest
import torch

from steerable.errors import ConfigError, InputError
from steerable.rl.algos import ADVANTAGES, POLICY_LOSSES, RLConfig, groups, majority_labels

CFG = RLConfig()


def test_grpo_advantage_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])  # two prompts, G = 3
    adv, m = ADVANTAGES["grpo"](r, 3, CFG)
    # group 1: mean 1/3, std (unbiased) sqrt(1/3); group 2: mean 2/3, same std
    s = math.sqrt(1 / 3)
    want = [(2 / 3) / s, (-1 / 3) / s, (-1 / 3) / s, (-2 / 3) / s, (1 / 3) / s, (1 / 3) / s]
    assert adv.tolist() == pytest.approx(want, rel=1e-3)
    same, _ = ADVANTAGES["grpo"](torch.ones(4), 2, CFG)
    assert same.tolist() == [0, 0, 0, 0]
    dr, _ = ADVANTAGES["dr_grpo"](r, 3, CFG)
    assert dr.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, -2 / 3, 1 / 3, 1 / 3])


def test_groups_are_formed_per_prompt_and_checked():
    prompts = ["a", "a", "b", "b"]
    assert groups(4, 2, prompts) == 2
    with pytest.raises(InputError, match="mixes prompts"):
        groups(4, 2, ["a", "b", "a", "b"])  # interleaved: the classic silent GRPO bug
    with pytest.raises(InputError, match="does not split"):
        groups(5, 2)
    # a prompt-major batch gives each rollout its own prompt's baseline, whatever the other prompt's rewards
    r = torch.tensor([1.0, 0.0, 5.0, 5.0])
    adv, _ = ADVANTAGES["dr_grpo"](r, 2, CFG, prompts=prompts)
    assert adv.tolist() == [0.5, -0.5, 0.0, 0.0]


def test_l_grpo_rewards_length_only_when_the_whole_group_is_right():
    cfg = RLConfig(length_weight=1.0, max_completion_length=100, scale_std=False)
    r = torch.tensor([1.0, 1.0, 1.0, 0.0])
    correct = torch.tensor([True, True, True, False])
    lengths = torch.tensor([20.0, 60.0, 20.0, 60.0])
    adv, m = ADVANTAGES["l_grpo"](r, 2, cfg, correct=correct, lengths=lengths)
    # group 1 all correct: shaped 1.8 and 1.4 -> +-0.2; group 2 not: plain 1 vs 0 -> +-0.5
    assert adv.tolist() == pytest.approx([0.2, -0.2, 0.5, -0.5])
    assert m["frac_groups_all_correct"] == 0.5


def test_efficiency_rewards_shorter_than_own_correct_answers():
    cfg = RLConfig(length_weight=1.0, scale_std=False)
    r = torch.tensor([1.0, 1.0, 0.0, 1.0])
    correct = r.bool()
    lengths = torch.tensor([30.0, 60.0, 10.0, 90.0])
    adv, _ = ADVANTAGES["efficiency"](r, 4, cfg, correct=correct, lengths=lengths)
    # mean correct length 60: bonuses +0.5, 0, (wrong: 0), -0.5 -> shaped 1.5, 1, 0, 0.5 -> mean 0.75
    assert adv.tolist() == pytest.approx([0.75, 0.25, -0.75, -0.25])


def test_aspo_shapes_only_correct_rollouts_and_never_flips_sign():
    cfg = RLConfig(aspo_delta=-2.0, aspo_k=0.7)
    r = torch.tensor([1.0, 1.0, 0.0, 0.0])
    correct = r.bool()
    pos = torch.tensor([10.0, 30.0, 5.0, 5.0])
    base, _ = ADVANTAGES["grpo"](r, 4, cfg)
    adv, _ = ADVANTAGES["aspo"](r, 4, cfg, correct=correct, positions=pos)
    assert adv[2:].tolist() == base[2:].tolist()
    assert adv[0] > base[0] and adv[1] < base[1]  # earlier is better with delta < 0
    assert (adv[:2] > 0).all()  # the clip at k|A| keeps the sign


def _batch():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.5, -2.0]], requires_grad=True)
    old = torch.tensor([[-1.2, -2.0, -0.1], [-0.3, -1.0, -2.0]])
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    return logp, old, adv, mask


def _ppo_by_hand(logp, old, adv, eps_low, eps_high):
    out = []
    for i in range(2):
        row = []
        for t in range(3):
            r = math.exp(logp[i][t] - old[i][t])
            a = adv[i]
            row.append(-min(r * a, max(min(r, 1 + eps_high), 1 - eps_low) * a))
        out.append(row)
    return out


def test_grpo_dr_grpo_dapo_losses_by_hand():
    logp, old, adv, mask = _batch()
    per = _ppo_by_hand(logp.tolist(), old.tolist(), adv.tolist(), 0.2, 0.2)
    grpo, m = POLICY_LOSSES["grpo"](logp, old, adv, mask, CFG)
    assert grpo.item() == pytest.approx((sum(per[0]) / 3 + sum(per[1][:2]) / 2) / 2, rel=1e-5)
    assert 0 < m["clip_frac"] < 1
    dr, _ = POLICY_LOSSES["dr_grpo"](logp, old, adv, mask, RLConfig(max_completion_length=4))
    assert dr.item() == pytest.approx((sum(per[0]) + sum(per[1][:2])) / (2 * 4), rel=1e-5)
    per_h = _ppo_by_hand(logp.tolist(), old.tolist(), adv.tolist(), 0.2, 0.28)
    dapo, _ = POLICY_LOSSES["dapo"](logp, old, adv, mask, RLConfig(eps_high=0.28))
    assert dapo.item() == pytest.approx((sum(per_h[0]) + sum(per_h[1][:2])) / 5, rel=1e-5)


def _grad(loss_name, cfg=CFG, **kw):
    logp = torch.tensor([[-1.0, -2.0, -0.5, -0.2], [-0.3, -1.5, -2.0, -0.9]], requires_grad=True)
    adv = torch.tensor([[3.0, -2.0, 4.0, 1.0], [-3.0, 2.0, 5.0, -1.0]])
    mask = torch.ones(2, 4)
    loss, m = POLICY_LOSSES[loss_name](logp, logp.detach(), adv, mask, cfg, **kw)
    loss.backward()
    return logp.grad.clone(), adv, mask, m


def test_kl_cov_on_policy_is_exactly_the_vanilla_policy_gradient():
    cfg = RLConfig(kl_cov_ratio=0.5)  # the penalty is on half the tokens: it must still vanish on-policy
    grad, adv, mask, m = _grad("kl_cov", cfg)
    vanilla = -adv / mask.sum()  # d/dlogp of mean(-A * exp(logp - old)) at logp = old
    assert torch.allclose(grad, vanilla)
    assert m["kl_cov_frac"] == 0.5


def test_clip_cov_on_policy_is_not_the_vanilla_policy_gradient():
    cfg = RLConfig(clip_cov_ratio=0.25, clip_cov_lb=-100.0, clip_cov_ub=100.0)
    grad, adv, mask, m = _grad("clip_cov", cfg, generator=torch.Generator().manual_seed(0))
    vanilla = -adv / mask.sum()
    assert not torch.allclose(grad, vanilla)
    assert int((grad == 0).sum()) == 2  # 25% of 8 tokens detached
    assert m["cov_detached_frac"] == 0.25


def test_clip_cov_detaches_only_inside_the_covariance_window():
    cfg = RLConfig(clip_cov_ratio=0.5, clip_cov_lb=1e6, clip_cov_ub=2e6)  # no token has such a covariance
    grad, adv, mask, _ = _grad("clip_cov", cfg, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(grad, -adv / mask.sum())


def test_mdpo_penalises_moving_away_from_the_sampling_policy():
    logp, old, adv, mask = _batch()
    loss0, m0 = POLICY_LOSSES["mdpo"](logp, old, adv, mask, RLConfig(mdpo_kl_coef=0.0))
    loss1, m1 = POLICY_LOSSES["mdpo"](logp, old, adv, mask, RLConfig(mdpo_kl_coef=1.0))
    d = old - logp.detach()
    kl = ((torch.exp(d) - d - 1) * mask).sum(-1) / mask.sum(-1)
    assert (loss1 - loss0).item() == pytest.approx(float(kl.mean()), rel=1e-5)
    assert m1["kl_old"] > 0


def test_icpo_shapes_off_policy_rows_without_clipping():
    logp, old, adv, mask = _batch()
    off = torch.tensor([False, True])
    loss, m = POLICY_LOSSES["icpo"](logp, old, adv, mask, RLConfig(icpo_gamma=0.1), off_policy=off)
    per = _ppo_by_hand(logp.tolist(), old.tolist(), adv.tolist(), 0.2, 0.2)
    p = torch.exp(logp.detach()[1, :2])
    shaped = (-adv[1] * p / (p + 0.1)).sum()
    assert loss.item() == pytest.approx((sum(per[0]) + float(shaped)) / 5, rel=1e-5)
    assert m["off_policy_frac"] == 0.5


def test_majority_labels_per_group():
    assert majority_labels(["1", "2", "2", None, None, None], 3) == ["2", "2", "2", None, None, None]


def test_bad_inputs_are_clear():
    with pytest.raises(ConfigError, match="correct and lengths"):
        ADVANTAGES["l_grpo"](torch.ones(4), 2, CFG)


def test_brpo_token_advantages_by_hand():
    adv, m = ADVANTAGES["brpo"](
        torch.zeros(2),
        2,
        CFG,
        cut_rewards=torch.tensor([[0.0, 1.0], [1.0, 1.0]]),
        cuts=torch.tensor([[2, 4], [2, 4]]),
        priors=torch.tensor([0.5, 0.5]),
        length=5,
    )
    # returns R = [[.5, .5], [1, .5]]; baselines = .5 * group mean [.75, .5] + .5 * earlier reward * tail prior
    want = [[0.125, 0.125, 0.25, 0.25, 0.0], [0.625, 0.625, 0.0, 0.0, 0.0]]
    assert torch.allclose(adv, torch.tensor(want))
    assert m["return_mean"] == pytest.approx(0.75)


def test_ettrl_scales_advantages_by_relative_response_entropy():
    r = torch.tensor([1.0, 1.0, 0.0, 0.0])
    ent = torch.tensor([0.1, 0.3, 0.2, 0.2])  # group mean 0.2
    base, _ = ADVANTAGES["grpo"](r, 4, CFG)
    adv, m = ADVANTAGES["ettrl"](r, 4, CFG, entropies=ent)
    y = [1.5, 0.5, 1.0, 1.0]  # 1 + (0.2 - H) / 0.2
    assert adv.tolist() == pytest.approx([b * k for b, k in zip(base.tolist(), y, strict=True)])
    assert m["entropy_scale_max"] == pytest.approx(1.5)
    # more than twice the group's entropy: the scale stops at 0 instead of flipping the sign
    adv, _ = ADVANTAGES["ettrl"](r, 4, CFG, entropies=torch.tensor([0.05, 0.9, 0.05, 0.0]))
    assert adv[1].item() == 0.0 and adv[0] > base[0]
    one_right = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0])
    plain, _ = ADVANTAGES["grpo"](one_right, 8, CFG)
    clipped, _ = ADVANTAGES["ettrl"](one_right, 8, RLConfig(ettrl_adv_clip=2.0), entropies=torch.ones(8))
    assert plain.max() > 2.0 and clipped.max().item() == pytest.approx(2.0)
    assert clipped[1:].tolist() == pytest.approx(plain[1:].tolist())


def test_igpo_turn_advantages_by_hand():
    # rollout 0: one step gaining 0.5, then a right answer; rollout 1: two steps (-0.25, 0), then wrong
    gains = [torch.tensor([0.5]), torch.tensor([-0.25, 0.0])]
    turns = torch.tensor([[0, 0, 1, -1], [0, 1, 2, 2]])
    adv, m = ADVANTAGES["igpo"](torch.tensor([1.0, 0.0]), 2, CFG, gains=gains, token_turns=turns)
    flat = [0.5, 1.0, -0.25, 0.0, 0.0]
    mean = sum(flat) / 5
    std = math.sqrt(sum((x - mean) ** 2 for x in flat) / 5)
    z = [(x - mean) / (std + CFG.eps_std) for x in flat]
    r0 = [z[0] + z[1], z[1]]  # returns: sums of the normalised turn rewards from each turn on (gamma 1)
    r1 = [z[2] + z[3] + z[4], z[3] + z[4], z[4]]
    assert adv[0].tolist() == pytest.approx([r0[0], r0[0], r0[1], 0.0], abs=1e-5)
    assert adv[1].tolist() == pytest.approx([r1[0], r1[1], r1[2], r1[2]], abs=1e-5)
    assert m["turns_mean"] == 2.5
    half, _ = ADVANTAGES["igpo"](torch.tensor([1.0, 0.0]), 2, RLConfig(igpo_gamma=0.5), gains=gains, token_turns=turns)
    assert half[1, 0].item() == pytest.approx(z[2] + 0.5 * z[3] + 0.25 * z[4], abs=1e-5)
    with pytest.raises(ConfigError, match="information gains"):
        ADVANTAGES["igpo"](torch.tensor([1.0, 0.0]), 2, CFG)


def test_igpo_gain_is_negative_on_the_line_that_goes_wrong(local):
    from steerable.rl.trainer import Algo, make_trainer_class

    tok = local.tokenizer
    prompt = tok("Q: 12+5*2=\n")["input_ids"]
    right, wrong = "12+5=17\n17*2=34\nA: 34", "12+5=18\n18*2=36\nA: 36"
    comps = [tok(t, add_special_tokens=False)["input_ids"] for t in (right, wrong)]
    width = max(map(len, comps))
    out = {
        "prompt_ids": torch.tensor([prompt, prompt]),
        "prompt_mask": torch.ones(2, len(prompt), dtype=torch.long),
        "completion_ids": torch.tensor([c + [0] * (width - len(c)) for c in comps]),
        "completion_mask": torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in comps]),
    }

    class Stub:  # the parts of the trainer the gains read
        processing_class, model, rl_config = tok, local.model, CFG

    got = make_trainer_class()._information_gains(Stub, {}, ["34", "34"], out)
    g_right, g_wrong = got["gains"]
    assert len(g_right) == len(g_wrong) == 2  # two step lines before the answer line
    # the model cannot answer before it has computed: the true answer's probability stays ~0 until the line
    # that writes it, which gains nearly all of it on the right chain and nothing on the wrong one
    assert g_right[1] > 0.5 and g_wrong.abs().max() < 0.05 and g_right[0].abs() < 0.05
    assert got["token_turns"][0, :8].tolist() == [0] * 8 and got["token_turns"][0, 8].item() == 1
    assert got["token_turns"][0, len(comps[0]) :].eq(-1).all()
    assert Algo("igpo").advantage == "igpo"
