"""EAPO (IterResearch): every round of an agent episode a sample of reward γ^(T−t)·R, normalised over the
group's rounds, trained with GSPO's per-round sequence ratio; the environment's tokens carry no gradient."""

import json
import math

import pytest
import torch

from steerable.errors import ConfigError
from steerable.rl.algos import ADVANTAGES, ALGOS, POLICY_LOSSES, RLConfig, rl_config_for
from steerable.rl.inputs import round_ids


def test_a_round_is_the_model_tokens_between_two_observations():
    # model: "get k1\n" (3 tokens), env: "= k2\n" (2), model (2), env (1), model: the answer (2)
    mask = [1, 1, 1, 0, 0, 1, 1, 0, 1, 1]
    assert round_ids(mask) == [0, 0, 0, -1, -1, 1, 1, -1, 2, 2]
    assert round_ids([1, 1, 0, 0]) == [0, 0, -1, -1]  # cut after an observation: no third round
    assert round_ids([1, 1, 1]) == [0, 0, 0]  # answered at once: one round


def _ids(rounds_per_row: list[list[int]], width: int) -> torch.Tensor:
    out = torch.full((len(rounds_per_row), width), -1, dtype=torch.long)
    for i, r in enumerate(rounds_per_row):
        out[i, : len(r)] = torch.tensor(r)
    return out


def test_eapo_advantages_match_hand_values_and_rounds_get_their_own():
    """Two groups of two (γ = 0.5). Group 1: A solves in 2 rounds, B fails in 3. Group 2: both solve, C in 1
    round, D in 3: outcome-only GRPO has nothing to learn there, EAPO ranks the rounds."""
    ids = _ids(
        [
            [0, 0, -1, 1, 1],  # A: round 0, an observation, round 1
            [0, -1, 1, -1, 2],  # B
            [0, 0],  # C (then padding)
            [0, -1, 1, 1, -1, 2],  # D
        ],
        6,
    )
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    cfg = rl_config_for(ALGOS["eapo"], eapo_gamma=0.5)
    adv, m = ADVANTAGES["eapo"](rewards, 2, cfg, round_ids=ids)
    # group 1: round rewards A (0.5, 1), B (0, 0, 0); mean 0.3, std (unbiased) sqrt(0.2)
    s = math.sqrt(0.2) + cfg.eps_std
    assert adv[0].tolist() == pytest.approx([0.2 / s, 0.2 / s, 0.0, 0.7 / s, 0.7 / s, 0.0])
    assert adv[1].tolist() == pytest.approx([-0.3 / s, 0.0, -0.3 / s, 0.0, -0.3 / s, 0.0])
    # group 2: C (1), D (0.25, 0.5, 1)
    r = torch.tensor([1.0, 0.25, 0.5, 1.0])
    z = ((r - r.mean()) / (r.std() + cfg.eps_std)).tolist()
    assert adv[2].tolist() == pytest.approx([z[0], z[0], 0, 0, 0, 0])
    assert adv[3].tolist() == pytest.approx([z[1], 0, z[2], z[2], 0, z[3]])
    assert adv[0, 0] != adv[0, 3] and len({adv[3, 0].item(), adv[3, 2].item(), adv[3, 5].item()}) == 3
    assert adv[2, 0] > adv[3, 0]  # the shorter correct trajectory's round is worth more than the longer's first
    assert m["rounds_mean"] == 2.25 and m["round_samples"] == 9 and m["correct_rounds_mean"] == pytest.approx(2)
    assert m["all_correct_frac"] == 0.5 and m["all_correct_trained_frac"] == 0.5
    # γ = 1: outcome-only rounds; the all-correct group has no spread left, the mixed one is GRPO over rounds
    adv1, m1 = ADVANTAGES["eapo"](rewards, 2, rl_config_for(ALGOS["eapo"], eapo_gamma=1.0), round_ids=ids)
    assert bool((adv1[2:] == 0).all()) and m1["all_correct_trained_frac"] == 0.0 and m1["frac_zero_std"] == 0.5
    assert adv1[0, 0] == adv1[0, 3] > 0 > adv1[1, 0] == adv1[1, 4]


def test_eapo_loss_weighs_each_round_once_and_gives_environment_tokens_no_gradient():
    ids = _ids([[0, 0, -1, 1], [0, 0, 0, -1]], 4)
    env = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 0]], dtype=torch.float32)  # the trainer's mask (env + padding)
    adv = torch.tensor([[1.0, 1.0, 0.0, -2.0], [0.5, 0.5, 0.5, 0.0]])
    logp = torch.tensor([[-1.0, -2.0, -0.3, -0.5], [-1.0, -1.0, -1.0, -4.0]], requires_grad=True)
    cfg = rl_config_for(ALGOS["eapo"])
    loss, m = POLICY_LOSSES["eapo"](logp, logp.detach(), adv, env, cfg, round_ids=ids)
    (g,) = torch.autograd.grad(loss, logp)
    # on-policy: loss = −mean_k A_k, gradient −A_k / (|k| · rounds) on each real token of round k
    assert float(loss.detach()) == pytest.approx(-(1.0 - 2.0 + 0.5) / 3)
    want = [[-1 / 6, -1 / 6, 0.0, 2 / 3], [-0.5 / 9, -0.5 / 9, -0.5 / 9, 0.0]]
    assert g.flatten().tolist() == pytest.approx(sum(want, []))
    assert g[0, 2] == 0 and g[1, 3] == 0 and m["rounds"] == 3
    # GSPO's clip on the round's sequence ratio: round 0 of row 0 moved past 1 + ε_high with A > 0 -> no gradient
    old = logp.detach().clone()
    old[0, :2] -= 0.01
    _, m2 = POLICY_LOSSES["eapo"](logp, old, adv, env, cfg, round_ids=ids)
    (g2,) = torch.autograd.grad(POLICY_LOSSES["eapo"](logp, old, adv, env, cfg, round_ids=ids)[0], logp)
    assert g2[0, 0] == 0 and g2[0, 1] == 0 and g2[0, 3] != 0 and m2["clip_frac"] == pytest.approx(1 / 3)


def test_bad_gamma_and_non_agent_tasks_are_one_line_config_errors(tmp_path):
    from steerable.rl.run import RLRunConfig, _plan, parse_options

    for bad in ("0", "1.5", "-0.9"):
        with pytest.raises(ConfigError, match="eapo_gamma"):
            parse_options([f"eapo_gamma={bad}"])
    with pytest.raises(ConfigError, match="eapo_gamma"):
        RLConfig(eapo_gamma=0.0)
    assert parse_options(["eapo_gamma=0.9"]) == {"eapo_gamma": 0.9}
    base = dict(out=str(tmp_path), algo="eapo", steps=1, minutes=None)
    with pytest.raises(ConfigError, match="builtin:agent:ENV:SPLIT"):
        _plan(RLRunConfig(**base, task="builtin:easy"))
    plan = _plan(RLRunConfig(**base, task="builtin:agent:lookup:hard", options={"eapo_gamma": 0.9}))
    assert (plan.algo.advantage, plan.algo.loss, plan.rl.eapo_gamma) == ("eapo", "eapo", 0.9)
    assert (plan.rl.eps_low, plan.rl.eps_high) == (3e-4, 4e-4)  # GSPO's clip range


@pytest.mark.slow
def test_eapo_through_trl_trains_rounds_and_not_the_environment(tiny_dir, tmp_path, monkeypatch):
    """A scripted agent (even rows call the calculator twice and answer right, odd rows answer wrong in text):
    the rounds reach the loss, each with its advantage, and environment tokens get exactly zero gradient."""
    pytest.importorskip("trl")
    from test_agent_rl import Scripted, watch_loss_gradient

    from steerable.rl.run import RLRunConfig, train_rl

    monkeypatch.setattr("steerable.lm.local.LocalGenerator", Scripted)
    seen = watch_loss_gradient(monkeypatch)
    cfg = RLRunConfig(out=str(tmp_path), model=tiny_dir, task="builtin:agent:calculator:easy", algo="eapo",
                      steps=1, minutes=None, prompts_per_step=2, group=2, max_completion=64, eval_every=0,
                      eval_n=2, save_every=5, device="cpu", options={"eapo_gamma": 0.5})  # fmt: skip
    train_rl(cfg, progress=False)
    inputs, grad = seen["inputs"], seen["grad"]
    real = inputs["completion_mask"].bool()
    env = real & (inputs["tool_mask"] == 0)
    ids, adv = inputs["round_ids"], inputs["advantages"]
    assert int(env.sum()) > 0 and bool((grad[env] == 0).all()) and bool((ids[env] == -1).all())
    assert bool((grad[real & ~env] != 0).all())
    for i in range(len(ids)):
        rounds = sorted({int(r) for r in ids[i] if r >= 0})
        vals = [float(adv[i][ids[i] == r][0]) for r in rounds]
        if len(rounds) > 1:  # the tool-calling rows: 3 rounds, each its own advantage, rising to the answer
            assert vals == sorted(vals) and len(set(vals)) == len(vals)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if r.get("step") == 1 and "reward" in r)
    assert step["adv/rounds_mean"] > 1 and step["loss/rounds"] > step["adv/rounds_mean"]
    assert step["agent/env_steps"] == step["agent/tool_calls"] > 0  # the calculator's actions are its tool calls
