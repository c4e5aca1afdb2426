"""T-PPO: EGAE against a from-scratch sum on a hand-made window, the critic's Monte-Carlo targets, the refill, and
short runs that show which tokens each of the policy and the critic is trained on."""

import json

import pytest
import torch

from steerable.errors import ConfigError
from steerable.rl.tppo import Slot, critic_targets, extended_gae, refill


def _scratch(rewards: list[float], values: list[float], after: float, gamma: float, lam: float) -> list[float]:
    """``Â_t = Σ_k (γλ)^k δ_{t+k}`` written out: ``δ_t = r_t + γ V_{t+1} − V_t``, ``V_n = after``."""
    v = values + [after]
    deltas = [rewards[t] + gamma * v[t + 1] - v[t] for t in range(len(values))]
    return [sum((gamma * lam) ** k * deltas[t + k] for k in range(len(values) - t)) for t in range(len(values))]


def test_egae_matches_the_sum_of_discounted_td_errors_with_the_bootstrap_at_the_cut_and_zero_at_the_end():
    gamma, lam = 0.9, 0.8
    # row 0: cut after 3 of 4 slots (goes on: bootstrap 0.7); row 1: ended on its 4th token with reward 1
    # (its bootstrap 5.0 must be ignored); row 2: ended after 2 tokens with reward 0
    values = torch.tensor([[0.2, 0.5, -0.1, 0.0], [0.1, 0.3, 0.6, 0.9], [0.4, -0.2, 0.0, 0.0]])
    rewards = torch.tensor([[0.0, 0, 0, 0], [0, 0, 0, 1.0], [0, 0, 0, 0]])
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
    boot = torch.tensor([0.7, 5.0, 3.0])
    ended = torch.tensor([False, True, True])
    adv, returns = extended_gae(rewards, values, boot, mask, ended, gamma, lam)
    want = [
        _scratch([0, 0, 0], [0.2, 0.5, -0.1], 0.7, gamma, lam) + [0.0],
        _scratch([0, 0, 0, 1], [0.1, 0.3, 0.6, 0.9], 0.0, gamma, lam),
        _scratch([0, 0], [0.4, -0.2], 0.0, gamma, lam) + [0.0, 0.0],
    ]
    assert torch.allclose(adv, torch.tensor(want), atol=1e-6)
    assert torch.allclose(returns, (torch.tensor(want) + values) * mask, atol=1e-6)
    # the cut: the last token of row 0 is a one-step TD error onto the bootstrap
    assert float(adv[0, 2]) == pytest.approx(0.9 * 0.7 - (-0.1))


def test_egae_at_gamma_lambda_one_is_the_monte_carlo_advantage_of_a_finished_response():
    values = torch.tensor([[0.3, 0.6, 0.2]])
    adv, _ = extended_gae(torch.tensor([[0.0, 0, 1]]), values, torch.tensor([9.0]), torch.ones(1, 3),
                          torch.tensor([True]), 1.0, 1.0)  # fmt: skip
    assert adv[0].tolist() == pytest.approx([0.7, 0.4, 0.8])  # R - V_t


def test_critic_targets_are_discounted_final_rewards_up_to_each_length():
    g = critic_targets(torch.tensor([3, 1]), torch.tensor([1.0, 2.0]), 4, 0.5)
    assert torch.equal(g, torch.tensor([[0.25, 0.5, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0]]))


def test_refill_replaces_exactly_the_ended_slots_and_keeps_the_batch_full():
    slots = [Slot([1], "1", "p", [5, 6]) for _ in range(4)]
    drawn = iter(range(100))

    def fresh():
        return Slot([9, next(drawn)], "2", "q", [])

    out, n = refill(slots, [True, False, True, False], fresh)
    assert n == 2 and len(out) == 4
    assert out[1] is slots[1] and out[3] is slots[3]  # the going responses keep their slot and tokens
    assert [s.prompt for s in (out[0], out[2])] == [[9, 0], [9, 1]] and out[0].response == []


# runs: a built-in task draws its 20,000 rows once per session; seconds each
rl_rows = pytest.mark.usefixtures("rl_rows_once")
slow = pytest.mark.slow


def _cfg(out, model, **kw):
    pytest.importorskip("trl")
    from steerable.rl.run import RLRunConfig

    base = dict(out=str(out), model=model, task="builtin:easy", algo="tppo", steps=3, minutes=None,
                prompts_per_step=2, group=2, max_completion=8, eval_every=0, eval_n=4, device="cpu",
                options={"tppo_window": 3})  # fmt: skip
    return RLRunConfig(**{**base, **kw})


@rl_rows
@slow
def test_policy_sees_only_window_tokens_and_critic_only_completed_responses(tmp_path, tiny_dir, monkeypatch):
    from steerable.rl import tppo
    from steerable.rl.algos import POLICY_LOSSES
    from steerable.rl.run import train_rl

    seen, targets = [], []
    real_loss, real_targets = POLICY_LOSSES["ppo"], tppo.critic_targets

    def spy_loss(logp, old, adv, mask, cfg):
        seen.append((tuple(logp.shape), float(mask.sum())))
        return real_loss(logp, old, adv, mask, cfg)

    def spy_targets(lengths, rewards, width, gamma):
        targets.append(lengths.tolist())
        return real_targets(lengths, rewards, width, gamma)

    monkeypatch.setitem(POLICY_LOSSES, "ppo", spy_loss)
    monkeypatch.setattr(tppo, "critic_targets", spy_targets)
    train_rl(_cfg(tmp_path, tiny_dir, steps=4), progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("step", 0) > 0 and not r.get("final")]
    assert len(steps) == len(seen) == 4
    for r, (shape, n) in zip(steps, seen, strict=True):
        assert shape[0] == 4 and shape[1] <= 3  # B rows, at most the window: no prompt or earlier token
        assert n == r["window_tokens"] <= 4 * 3
        assert r["policy_token_share"] < 1  # the prefix ran, but outside the loss
        assert r["active_slots"] == 4 and r["refilled"] == r["completed"]  # the batch stays full
    # the critic trained once per window that completed responses, on exactly those, each whole (<= the cap)
    done = [r["completed"] for r in steps if r["completed"]]
    assert done  # the cap ends every response by the third window
    assert [len(t) for t in targets] == done
    assert all(1 <= n <= 8 for t in targets for n in t)
    assert all(r["critic_loss"] == 0.0 for r in steps if not r["completed"])
    # a cap of 8 in windows of 3: nothing can complete before the third window except by EOS
    assert sum(len(t) for t in targets) == sum(r["completed"] for r in steps)


@rl_rows
@slow
def test_a_short_tppo_run_on_the_builtin_model_writes_the_usual_outputs(tmp_path):
    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.rl.run import train_rl
    from steerable.rl.tppo import load_value_head

    summary = train_rl(
        _cfg(
            tmp_path,
            "builtin",
            task="builtin:medium",
            steps=2,
            max_completion=24,
            eval_every=1,
            options={"tppo_window": 12},
        )  # fmt: skip
    )
    assert summary["steps"] == 2 and summary["algo"] == "tppo" and summary["tokens"] > 0
    for f in ("model.safetensors", "metrics.jsonl", "curves.png", "summary.json", "run.json"):
        assert (tmp_path / f).exists(), f
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "held_in_accuracy" in r] == [0, 1, 2, 2]  # start, every step, final
    head = load_value_head(tmp_path)
    assert head.linear.in_features == 192
    gen = LocalGenerator.from_pretrained(str(tmp_path), device="cpu")
    assert gen.generate(["Q: 1+1=\n"], SamplingParams(max_new_tokens=3, temperature=0))[0].token_ids


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"beta": 0.1}, "reference model"),
        ({"iterations": 2}, "one optimiser step"),
        ({"reward": "majority"}, "no groups"),
        ({"task": "builtin:agent:lookup:easy"}, "agent episodes"),
        ({"options": {"tppo_window": 0}}, "tppo_window"),
        ({"options": {"tppo_lambda": 1.5}}, "tppo_lambda"),
    ],
)
def test_what_tppo_does_not_do_is_a_one_line_error(tmp_path, kw, msg):
    pytest.importorskip("trl")
    from steerable.rl.run import _plan

    with pytest.raises(ConfigError, match=msg):
        _plan(_cfg(tmp_path, "builtin", **kw))
