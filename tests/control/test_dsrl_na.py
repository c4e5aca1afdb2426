import json

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("diffusers")

from steerable.control.policies.noise import load_na_actor  # noqa: E402
from steerable.control.policies.normalize import ActionScale  # noqa: E402
from steerable.control.training.bc import PolicyConfig, train_policy  # noqa: E402
from steerable.control.training.dsrl import DSRLConfig, train_dsrl  # noqa: E402
from steerable.control.training.dsrl_na import (  # noqa: E402
    TwinQ,
    distill_loss,
    distill_target,
    td_target,
    train_dsrl_na,
)
from steerable.control.worlds.data import DataConfig, make_dataset  # noqa: E402
from steerable.errors import ConfigError  # noqa: E402


def fixed_twin_q() -> TwinQ:
    """Q_j(s, x) = c_j + u_j . [s, x]: two linear critics with weights set by hand."""
    q = TwinQ(obs_dim=1, x_dim=2, width=8, layers=1, layer_norm=False)
    q.q = torch.nn.ModuleList([torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)])
    with torch.no_grad():
        q.q[0].weight[:] = torch.tensor([[1.0, 2.0, -1.0]])
        q.q[0].bias[:] = 0.5
        q.q[1].weight[:] = torch.tensor([[0.0, 1.0, 1.0]])
        q.q[1].bias[:] = 0.0
    return q


def decode(obs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A stand-in for pi_dp: a = 2 w + s (different from w, so a test that fed w to Q^A would fail)."""
    return 2 * w + obs


def test_distill_target_is_each_action_head_at_the_decoded_action_of_the_noise():
    q = fixed_twin_q()
    obs, w = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.5, -1.0], [1.0, 1.0]])
    # row 0: a = (2, -1); Q_0 = 0.5 + 1 + 4 + 1 = 6.5, Q_1 = 2 - 1 = 1
    # row 1: a = (2, 2);  Q_0 = 0.5 + 0 + 4 - 2 = 2.5, Q_1 = 2 + 2 = 4
    assert torch.allclose(distill_target(q, decode, obs, w), torch.tensor([[6.5, 2.5], [1.0, 4.0]]))


def test_distill_loss_regresses_each_noise_head_on_its_own_action_head_not_the_min():
    qa = fixed_twin_q()
    qw = TwinQ(obs_dim=1, x_dim=2, width=8, layers=1, layer_norm=False)
    qw.q = torch.nn.ModuleList([torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)])
    with torch.no_grad():  # Q^W_0 = 1 + w_1, Q^W_1 = 3 (constants and one slope, by hand)
        qw.q[0].weight[:] = torch.tensor([[0.0, 1.0, 0.0]])
        qw.q[0].bias[:] = 1.0
        qw.q[1].weight[:] = 0.0
        qw.q[1].bias[:] = 3.0
    obs, w = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.5, -1.0], [1.0, 1.0]])
    # head 0: Q^W_0 = (1.5, 2) against Q^A_0 = (6.5, 2.5): errors 5, 0.5 -> mean sq 12.625
    # head 1: Q^W_1 = (3, 3)   against Q^A_1 = (1, 4):     errors 2, 1   -> mean sq 2.5
    assert float(distill_loss(qw, qa, decode, obs, w).detach()) == pytest.approx(0.5 * (12.625 + 2.5))
    # against the min of both heads (1, 2.5), as this file did before, it would be 0.5 * (0.125 + 4.625 + 4 + 0.25)
    assert float(distill_loss(qw, qa, decode, obs, w).detach()) != pytest.approx(0.5 * (0.125 + 4.625 + 4.0 + 0.25))


def test_td_target_uses_the_decoded_next_action_and_stops_only_at_termination():
    q = fixed_twin_q()
    w2 = torch.tensor([[0.5, -1.0], [0.5, -1.0], [0.5, -1.0]])
    logp = torch.tensor([-2.0, -2.0, -2.0])

    def sample(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return w2, logp

    s2 = torch.ones(3, 1)
    r = torch.tensor([0.1, 0.2, 0.3])
    terminated = torch.tensor([0.0, 1.0, 0.0])  # row 2 was truncated: not terminal, it bootstraps
    y = td_target(q, sample, decode, r, s2, terminated, gamma=0.9, alpha=0.5)
    boot = 0.9 * (1.0 + 0.5 * 2.0)  # min Q at a' = (2, -1) is 1, minus alpha log pi = +1
    assert y.tolist() == pytest.approx([0.1 + boot, 0.2, 0.3 + boot])


def test_na_end_to_end_writes_its_outputs_and_its_actor_acts(tmp_path):
    d = make_dataset(DataConfig(out="-", episodes=4, seed=1))
    scale = ActionScale((-1.0, -1.0), (1.0, 1.0))
    pol, _ = train_policy(PolicyConfig(data="-", out="-", steps=2, hidden=16, layers=1, steps_inference=2), d, scale,
                          progress=False)  # fmt: skip
    pol.save(tmp_path / "p")
    cfg = DSRLConfig(policy=str(tmp_path / "p"), out=str(tmp_path / "na"), variant="na", env_steps=64,
                     learning_starts=16, envs=2, gradient_steps=4, batch_size=8, width=8, layers=1, eval_every=32,
                     eval_episodes=1, noise_critic_steps=2)  # fmt: skip
    rec = train_dsrl_na(cfg, progress=False)
    assert rec["env_steps"] >= 64 and len(rec["curve"]) >= 2
    # each training call is 4 critic steps then 2 distillation steps: 0.5 per critic step, as the authors' 10 per 20
    calls = rec["distill_steps"] // 2
    assert calls >= 1 and rec["critic_steps"] == 4 * calls and rec["distill_steps"] == 2 * calls
    assert [row["distill_steps"] * 2 for row in rec["curve"]] == [row["critic_steps"] for row in rec["curve"]]
    saved = json.loads((tmp_path / "na" / "training.json").read_text())
    assert saved["config"]["variant"] == "na" and set(saved["final"]) >= {"alpha", "loss_qa", "loss_qw"}
    actor = load_na_actor(tmp_path / "na" / "actor.pt")
    w, _ = actor.predict(np.zeros((3, pol.obs_dim), np.float32))
    assert w.shape == (3, int(np.prod(pol.sample_shape))) and np.abs(w).max() <= 1.5
    with pytest.raises(ConfigError, match="variant sac"):  # SAC's trainer refuses the NA variant, never runs SAC
        train_dsrl(cfg, progress=False)


def test_bad_variant_and_steps_are_one_line_errors():
    with pytest.raises(ConfigError, match="variant") as e:
        DSRLConfig(policy="p", out="o", variant="ppo")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="noise_critic_steps|noise-critic-steps"):
        DSRLConfig(policy="p", out="o", noise_critic_steps=0)
