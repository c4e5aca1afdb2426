"""Advantages and losses against values of the papers' (and their official code's) formulas, computed by hand
on small tensors written out here."""

import math

import pytest
import torch

from steerable.errors import ConfigError, InputError
from steerable.rl.algos import (
    ADVANTAGES,
    ALGOS,
    POLICY_LOSSES,
    Budgets,
    RLConfig,
    brpo_answer_advantages,
    declared_inputs,
    groups,
    majority_labels,
    rl_config_for,
)
from steerable.rl.core import flat_groups

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


def test_every_estimator_and_loss_declares_its_inputs_and_refuses_unknown_ones():
    assert declared_inputs(ADVANTAGES["brpo"]) == {"prompts": False, "budgets": True}
    assert declared_inputs(POLICY_LOSSES["icpo"]) == {"off_policy": True}
    with pytest.raises(TypeError):  # no **kwargs: a misspelt input is an error, not ignored
        ADVANTAGES["grpo"](torch.ones(4), 2, CFG, correctt=torch.ones(4))
    with pytest.raises(TypeError, match="lengths"):
        ADVANTAGES["l_grpo"](torch.ones(4), 2, CFG, correct=torch.ones(4))


def test_dynamic_sampling_finds_the_groups_without_a_reward_spread():
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5])
    assert flat_groups(r, 2).tolist() == [True, False, True, True]


def test_l_grpo_rewards_length_only_when_the_whole_group_is_right():
    cfg = RLConfig(length_weight=1.0, max_completion_length=100, scale_std=False)
    r = torch.tensor([1.0, 1.0, 1.0, 0.0])
    correct = torch.tensor([True, True, True, False])
    lengths = torch.tensor([20.0, 60.0, 20.0, 60.0])
    adv, m = ADVANTAGES["l_grpo"](r, 2, cfg, correct=correct, lengths=lengths)
    # group 1 all correct: shaped 1.8 and 1.4 -> +-0.2; group 2 not: plain 1 vs 0 -> +-0.5
    assert adv.tolist() == pytest.approx([0.2, -0.2, 0.5, -0.5])
    assert m["frac_groups_all_correct"] == 0.5


def test_l_grpo_length_weight_has_no_effect_with_std_scaling():
    r = torch.ones(4)
    correct, lengths = torch.ones(4, dtype=torch.bool), torch.tensor([20.0, 60.0, 40.0, 40.0])
    small, _ = ADVANTAGES["l_grpo"](r, 4, RLConfig(length_weight=0.5), correct=correct, lengths=lengths)
    big, _ = ADVANTAGES["l_grpo"](r, 4, RLConfig(length_weight=5.0), correct=correct, lengths=lengths)
    z = [-(x - 40) / math.sqrt(800 / 3) for x in (20.0, 60.0, 40.0, 40.0)]  # the z-scores of the lengths
    # a tenfold weight moves them by what eps_std adds to the std alone (0.3%)
    assert small.tolist() == pytest.approx(big.tolist(), rel=5e-3) and big.tolist() == pytest.approx(z, rel=1e-3)
    unscaled, _ = ADVANTAGES["l_grpo"](
        r, 4, RLConfig(length_weight=5.0, scale_std=False), correct=correct, lengths=lengths
    )
    assert unscaled[0].item() == pytest.approx(5.0 * 20 / 256)  # without the std the weight counts


def test_efficiency_rewards_shorter_than_own_correct_answers():
    cfg = RLConfig(length_weight=1.0, scale_std=False)
    r = torch.tensor([1.0, 1.0, 0.0, 1.0])
    correct = r.bool()
    lengths = torch.tensor([30.0, 60.0, 10.0, 90.0])
    adv, _ = ADVANTAGES["efficiency"](r, 4, cfg, correct=correct, lengths=lengths)
    # mean correct length 60: bonuses +0.5, 0, (wrong: 0), -0.5 -> shaped 1.5, 1, 0, 0.5 -> mean 0.75
    assert adv.tolist() == pytest.approx([0.75, 0.25, -0.75, -0.25])


def _aspo(cfg):
    # group 0: three right (rows 0-2), one wrong; rows 0 and 1 call the tool. group 1: all right, all call it
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    tool = torch.tensor([True, True, False, True, True, True, True, True])
    pos = torch.tensor([10.0, 30.0, 5.0, 20.0, 1.0, 9.0, 3.0, 7.0])
    lens = torch.tensor([40.0, 60.0, 50.0, 80.0, 10.0, 20.0, 30.0, 40.0])
    return ADVANTAGES["aspo"](r, 4, cfg, correct=r.bool(), tool_used=tool, positions=pos, lengths=lens)


def test_aspo_shift_is_normalised_by_the_mean_length_of_the_groups_correct_tool_calls():
    a = 0.25 / (0.5 + 1e-4)  # GRPO advantage of a right answer in group 0 (mean 3/4, std 1/2)
    adv, m = _aspo(rl_config_for(ALGOS["aspo"]))  # the paper's conservative setting: delta -1.5, k 0.7
    # eligible: rows 0, 1 (right, tool); mean p = 20, mean L = 50: shifts -1.5 (10 - 20) / 50 = +0.3 and -0.3
    assert adv[:4].tolist() == pytest.approx([a + 0.3, a - 0.3, a, -3 * a], rel=1e-5)
    # an all-correct group has A = 0, so the clip at k|A| = 0 leaves it alone (the paper's Eq. 2)
    assert adv[4:].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert m["aspo_eligible_frac"] == 6 / 8
    assert m["aspo_shifted_frac"] == 2 / 8 and m["aspo_shift_abs_mean"] == pytest.approx(0.6 / 8)  # rows 0 and 1
    clipped, _ = _aspo(RLConfig(aspo_delta=-4.0, aspo_k=0.7))  # shifts +-0.8 pass the cap 0.7 |A|
    assert clipped[:2].tolist() == pytest.approx([a * 1.7, a * 0.3], rel=1e-5)
    assert ALGOS["aspo_aggressive"].config == {"aspo_delta": -2.0, "aspo_k": 0.9}


def test_icpo_advantage_adds_the_decaying_bonus_to_correct_demo_guided_rollouts():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0])
    off = torch.tensor([False, True, False, True])
    adv, m = ADVANTAGES["icpo"](r, 4, RLConfig(scale_std=False), correct=r.bool(), off_policy=off, batches_done=100)
    bonus = 1.0 * (1 - 100 / 400)  # beta max(0, 1 - t/400)
    shaped = [1.0, 0.0, 1.0, 1.0 + bonus]
    mean = sum(shaped) / 4
    assert adv.tolist() == pytest.approx([x - mean for x in shaped]) and m["icpo_bonus"] == bonus
    late, _ = ADVANTAGES["icpo"](r, 4, RLConfig(scale_std=False), correct=r.bool(), off_policy=off, batches_done=500)
    assert late.tolist() == pytest.approx([0.25, -0.75, 0.25, 0.25])


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


def test_grpo_dr_grpo_dapo_ppo_losses_by_hand():
    logp, old, adv, mask = _batch()
    per = _ppo_by_hand(logp.tolist(), old.tolist(), adv.tolist(), 0.2, 0.2)
    grpo, m = POLICY_LOSSES["grpo"](logp, old, adv, mask, CFG)
    assert grpo.item() == pytest.approx((sum(per[0]) / 3 + sum(per[1][:2]) / 2) / 2, rel=1e-5)
    assert 0 < m["clip_frac"] < 1
    dr, _ = POLICY_LOSSES["dr_grpo"](logp, old, adv, mask, RLConfig(max_completion_length=4))
    assert dr.item() == pytest.approx((sum(per[0]) + sum(per[1][:2])) / (2 * 4), rel=1e-5)
    ppo, _ = POLICY_LOSSES["ppo"](logp, old, adv, mask, CFG)
    assert ppo.item() == pytest.approx((sum(per[0]) + sum(per[1][:2])) / 5, rel=1e-5)
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


def test_mdpo_kl_weight_anneals_as_one_over_the_remaining_fraction():
    logp, old, adv, mask = _batch()
    d = old - logp.detach()
    k3 = float(((torch.exp(d) - d - 1) * mask).sum() / mask.sum())  # token-mean of the k3 estimator
    r = torch.exp(logp.detach() - old)
    pg = float((-adv[:, None] * r * mask).sum() / mask.sum())
    for progress, weight in ((0.0, 1.0), (0.5, 2.0), (0.9, 10.0)):  # 1 / t_k with t_k = 1 - k/K
        loss, m = POLICY_LOSSES["mdpo"](logp, old, adv, mask, RLConfig(), progress=progress)
        assert loss.item() == pytest.approx(pg + weight * k3, rel=1e-5) and m["mdpo_kl_weight"] == pytest.approx(weight)
    flat, m = POLICY_LOSSES["mdpo"](logp, old, adv, mask, RLConfig(mdpo_anneal=False, mdpo_kl_coef=0.1), progress=0.9)
    assert flat.item() == pytest.approx(pg + 0.1 * k3, rel=1e-5)
    assert ALGOS["mdpo"].iterations > 1  # m > 1 steps on each batch


def test_icpo_dual_clip_bounds_negative_advantage_on_policy_tokens():
    logp = torch.tensor([[0.0, -1.0], [0.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-1.5, -1.0], [-1.5, -1.0]])  # first token: ratio e^1.5 = 4.48
    adv = torch.tensor([-1.0, -1.0])
    mask = torch.ones(2, 2)
    off = torch.tensor([False, True])
    loss, m = POLICY_LOSSES["icpo"](logp, old, adv, mask, RLConfig(icpo_dual_clip=3.0, icpo_gamma=0.1), off_policy=off)
    # on-policy row: max(-rA, -clip(r)A) = 4.48 is cut to -cA = 3; the second token (ratio 1) gives 1
    on = [min(max(math.exp(1.5), 1.2), 3.0), 1.0]
    p = [1.0, math.exp(-1.0)]  # off-policy row: -A pi/(pi + 0.1), unclipped
    off_row = [x / (x + 0.1) for x in p]
    assert loss.item() == pytest.approx((sum(on) + sum(off_row)) / 4, rel=1e-5)
    assert m["dual_clip_frac"] == 0.5 and m["off_policy_frac"] == 0.5
    no_dual, _ = POLICY_LOSSES["icpo"](logp, old, adv, mask, RLConfig(icpo_dual_clip=100.0), off_policy=off)
    assert no_dual.item() == pytest.approx((math.exp(1.5) + 1.0 + sum(off_row)) / 4, rel=1e-5)


def test_majority_labels_per_group():
    assert majority_labels(["1", "2", "2", None, None, None], 3) == ["2", "2", "2", None, None, None]


def test_knobs_are_bounded():
    with pytest.raises(ConfigError, match="aspo_k must be >= 0 and <= 1"):
        RLConfig(aspo_k=2.0)
    with pytest.raises(ConfigError, match="icpo_dual_clip must be > 1"):
        RLConfig(icpo_dual_clip=1.0)
    with pytest.raises(ConfigError, match="brpo_prior"):
        RLConfig(brpo_prior="flat")


# ---- BRPO ----------------------------------------------------------------------------------------


def _budgets():
    # two rollouts of one prompt, S = 3 budgets, A = 2 answers after each cut
    scores = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]]])
    cuts = torch.tensor([[2, 4, 6], [2, 5, 5]])  # rollout 1's thinking ended at token 5: its last two cuts agree
    return Budgets(scores=scores, cuts=cuts, priors=torch.tensor([1.0, 1.0, 1.0]), length=7)


def test_brpo_baseline_is_the_official_mix_of_the_groups_and_the_trajectorys_earlier_scores():
    adv, m = ADVANTAGES["brpo"](torch.zeros(2), 2, CFG, budgets=_budgets())
    # r = [[0, .5, 1], [1, 1, .5]], p = 1/3 each: R = [[1/2, 1/2, 1/3], [5/6, 1/2, 1/6]]
    # V2 = group mean of R = [2/3, 1/2, 1/4]; V1_s = (sum_{j<s} 2^j r_j / sum_{j<s} 2^j) * sum_{j>=s} p_j:
    #   rollout 0: [0, 0 * 2/3, (0 + 2 * .5) / 3 * 1/3 = 1/9]; rollout 1: [0, 1 * 2/3, (1 + 2) / 3 * 1/3 = 1/3]
    # baseline_s = (s V1_s + (3 - s) V2_s) / 3
    seg0 = [1 / 2 - 2 / 3, 1 / 2 - (0 + 2 * 1 / 2) / 3, 1 / 3 - (2 * 1 / 9 + 1 / 4) / 3]
    seg1 = [5 / 6 - 2 / 3, 1 / 2 - (2 / 3 + 2 * 1 / 2) / 3, 1 / 6 - (2 * 1 / 3 + 1 / 4) / 3]
    # tokens before cut 0 get segment 0, then up to cut 1 segment 1, ...; tokens past the last cut the last
    want0 = [seg0[0]] * 2 + [seg0[1]] * 2 + [seg0[2]] * 3
    want1 = [seg1[0]] * 2 + [seg1[1]] * 3 + [seg1[2]] * 2
    assert adv[0].tolist() == pytest.approx(want0, abs=1e-6)
    assert adv[1].tolist() == pytest.approx(want1, abs=1e-6)
    assert m["return_mean"] == pytest.approx((1 / 2 + 5 / 6) / 2) and m["cut_score_1"] == pytest.approx(0.75)


def test_brpo_answers_are_judged_against_the_answers_from_the_same_context():
    adv = brpo_answer_advantages(_budgets(), 2)
    assert adv[0].tolist() == [[0.0, 0.0], [0.5, -0.5], [0.0, 0.0]]
    # rollout 1's cuts 1 and 2 are one context: its four answers share one mean, 3/4
    assert adv[1].tolist() == [[0.0, 0.0], [0.25, 0.25], [0.25, -0.75]]
    one = Budgets(torch.tensor([[[1.0], [0.0]], [[0.0], [0.0]]]), torch.tensor([[1, 2], [1, 2]]), torch.ones(2), 3)
    assert brpo_answer_advantages(one, 2).flatten().tolist() == [0.5, 0.0, -0.5, 0.0]  # A = 1: the group's mean


def test_brpo_priors_weigh_the_budgets():
    b = _budgets()
    base = Budgets(b.scores, b.cuts, torch.tensor([0.0, 0.0, 1.0]), b.length)
    adv, _ = ADVANTAGES["brpo"](torch.zeros(2), 2, CFG, budgets=base)
    # only the last budget counts: R_s = r_2 for every s; V2 = 3/4; V1_1 = r_0 * 1, V1_2 = (r_0 + 2 r_1) / 3
    assert adv[0, 0].item() == pytest.approx(1 - 0.75)
    assert adv[1, 6].item() == pytest.approx(0.5 - (2 * 1.0 + 0.75) / 3)


# ---- IGPO ----------------------------------------------------------------------------------------


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


def test_igpo_code_form_uses_raw_token_rewards_and_a_per_position_baseline():
    gains = [torch.tensor([0.5]), torch.tensor([-0.25, 0.0])]
    turns = torch.tensor([[0, 0, 1, 1, -1], [0, 1, 2, 2, 2]])
    outcomes = torch.tensor([1.0, -2.0])  # F1 of a right answer; -2 for no answer
    adv, _ = ADVANTAGES["igpo_code"](torch.zeros(2), 2, CFG, gains=gains, token_turns=turns, outcomes=outcomes)
    # token rewards (a turn's gain on its last token, the outcome on the last one):
    #   [0, .5, 0, 1, pad] and [-.25, 0, 0, 0, -2]; returns [1.5, 1.5, 1, 1, 0] and [-2.25, -2, -2, -2, -2]
    # baseline per position = mean of the two returns there: [-.375, -.25, -.5, -.5, -1]
    assert adv[0].tolist() == pytest.approx([1.875, 1.75, 1.5, 1.5, 0.0])
    assert adv[1].tolist() == pytest.approx([-1.875, -1.75, -1.5, -1.5, -1.0])


def test_igpo_f1_outcome_is_exact_match_for_numbers_and_minus_two_without_an_answer():
    from steerable.rl.inputs import f1

    assert (f1("34", "34"), f1("35", "34"), f1(None, "34"), f1("1 2", "2 3")) == (1.0, 0.0, -2.0, 0.5)


def test_igpo_gain_is_negative_on_the_line_that_goes_wrong(local):
    from steerable.rl.inputs import Batch, BatchInputs, Context

    tok = local.tokenizer
    prompt = tok("Q: 12+5*2=\n")["input_ids"]
    right, wrong = "12+5=17\n17*2=34\nA: 34", "12+5=18\n18*2=36\nA: 36"
    comps = [tok(t, add_special_tokens=False)["input_ids"] for t in (right, wrong)]
    width = max(map(len, comps))
    batch = Batch(
        2,
        ["q", "q"],
        [right, wrong],
        [prompt, prompt],
        comps,
        ["34", "34"],
        torch.zeros(2),
        width,
        torch.zeros(2, dtype=torch.bool),
    )
    x = BatchInputs(Context(local.model, tok, CFG, str, 1.0, 64, 0, 0.0), batch)
    g_right, g_wrong = x.get("gains")
    assert len(g_right) == len(g_wrong) == 2  # two step lines before the answer line
    # the model cannot answer before it has computed: the true answer's probability stays ~0 until the line
    # that writes it, which gains nearly all of it on the right chain and nothing on the wrong one
    assert g_right[1] > 0.5 and g_wrong.abs().max() < 0.05 and g_right[0].abs() < 0.05
    turns = x.get("token_turns")
    assert turns[0, :8].tolist() == [0] * 8 and turns[0, 8].item() == 1
    assert turns[0, len(comps[0]) :].eq(-1).all()
