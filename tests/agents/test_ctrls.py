import json
import math

import pytest
import torch

from steerable.agents.ctrls import Ctrls, LatentActions, epsilon_greedy, steered_episodes, step_reward
from steerable.agents.ctrls_train import CtrlsTrainConfig, behaviour_probs, kmeans, policy_loss, train_ctrls
from steerable.agents.process import AgentProcess, episode
from steerable.agents.registry import make_method
from steerable.agents.tree import OracleValue
from steerable.errors import ConfigError, InputError
from steerable.lm.loading import model_fingerprint
from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams
from steerable.steer.interventions import Add, steer
from steerable.steer.layers import decoder_layers
from steerable.tasks.agent.data import split_tasks
from steerable.tasks.agent.envs import make_env


@pytest.fixture(scope="module")
def agent():
    return LocalGenerator.from_pretrained("builtin:agent", device="cpu", chat_template="never")


@pytest.fixture(scope="module")
def trained(agent, tmp_path_factory):
    out = tmp_path_factory.mktemp("ctrls")
    cfg = CtrlsTrainConfig(out=str(out), collect=6, iterations=2, group=3, max_turns=4, actions=3)
    return out, train_ctrls(cfg, agent, model_fingerprint("builtin:agent"))


def test_kmeans_finds_three_separated_blobs():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(20, 2, generator=g) for c in centres])
    cents, labels = kmeans(x, 3, generator=torch.Generator().manual_seed(1))
    for c in centres:  # every true centre has a centroid beside it, holding its 20 points
        j = int(torch.cdist(c[None], cents).argmin())
        assert torch.allclose(cents[j], c, atol=0.1)
    assert sorted(torch.bincount(labels).tolist()) == [20, 20, 20]
    assert len({tuple(labels[i * 20 : (i + 1) * 20].tolist()) for i in range(3)}) == 3
    with pytest.raises(ConfigError, match="collect more"):
        kmeans(x[:2], 3)


def test_policy_loss_is_reinforce_on_the_epsilon_behaviour_plus_entropy_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]], requires_grad=True)  # π = (.25,.75), (.75,.25)
    actions, rewards = torch.tensor([1, 1]), torch.tensor([1.0, 0.0])
    eps, beta = 0.2, 0.1
    # μ = 0.8·π + 0.1: row 0 takes a=1 with 0.7, row 1 with 0.3; advantages +0.5, -0.5 (baseline 0.5)
    pg = -(0.5 * math.log(0.7) - 0.5 * math.log(0.3)) / 2
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    loss, m = policy_loss(logits, actions, rewards, eps, beta)
    assert float(loss.detach()) == pytest.approx(pg - beta * h, abs=1e-6)
    assert m["reward"] == 0.5 and m["entropy"] == pytest.approx(h, abs=1e-6)
    assert torch.allclose(behaviour_probs(logits, eps).sum(-1), torch.ones(2))
    # a per-step baseline replaces the batch mean: advantages 1 - 0.2 and 0 - 0.4
    loss_b, _ = policy_loss(logits, actions, rewards, eps, 0.0, torch.tensor([0.2, 0.4]))
    assert float(loss_b.detach()) == pytest.approx(-(0.8 * math.log(0.7) - 0.4 * math.log(0.3)) / 2, abs=1e-6)
    # with ε = 0 and no bonus the gradient is -(A/n)·(onehot(a) - π) per row
    logits.grad = None
    policy_loss(logits, actions, rewards, 0.0, 0.0)[0].backward()
    want = torch.tensor([[-0.25 * (0 - 0.25), -0.25 * (1 - 0.75)], [0.25 * (0 - 0.75), 0.25 * (1 - 0.25)]])
    assert torch.allclose(logits.grad, want, atol=1e-6)


def test_epsilon_greedy_fires_at_its_rate_and_otherwise_follows_the_policy():
    sure = torch.tensor([[50.0, 0.0, 0.0, 0.0]]).repeat(20_000, 1)  # π puts all its mass on action 0
    a, fired = epsilon_greedy(sure, 0.25, torch.Generator().manual_seed(0))
    assert float(fired.float().mean()) == pytest.approx(0.25, abs=0.015)
    assert bool((a[~fired] == 0).all())
    assert torch.bincount(a[fired], minlength=4).float().div(int(fired.sum())).sub(0.25).abs().max() < 0.03
    a0, f0 = epsilon_greedy(sure[:100], 0.0, torch.Generator().manual_seed(0))
    assert not f0.any() and bool((a0 == 0).all())


def test_the_step_verifier_rewards_on_track_moves_only():
    env = make_env("maze")
    env.reset({"env": "maze", "grid": "S.G../...../...../...../.....", "max_steps": 4})
    assert step_reward(env, 0) == 0.0  # no action this turn
    env.step("go d")  # away from the goal
    assert step_reward(env, 0) == 0.0
    env = make_env("maze")
    env.reset({"env": "maze", "grid": "S.G../...../...../...../.....", "max_steps": 4})
    env.step("go r")
    assert step_reward(env, 0) == 1.0
    env.step("go u")  # a wall
    assert step_reward(env, 1) == 0.0
    env.step("go r")
    assert env.solved and step_reward(env, 2) == 1.0


def test_steering_changes_the_turn_and_leaves_no_trace(agent):
    model, tok = agent.model, agent.tokenizer
    ids = tok(["[go] Q: maze S..#./.#.../...#./.#.G./.....\n"], return_tensors="pt")
    before = model(**ids).logits
    v = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with steer(model, Add(v, layers=(2,), strength=8.0)):
        steered = model(**ids).logits
    assert not torch.allclose(before, steered)
    assert torch.equal(model(**ids).logits, before)
    assert all(not layer._forward_pre_hooks for layer in decoder_layers(model))
    # a strong latent action changes what the episodes write, against the same token streams unsteered
    k, hidden = 2, model.config.hidden_size
    acts = LatentActions(torch.stack([v, -v]), 2, 8.0, torch.zeros(k, hidden), torch.zeros(k),
                         torch.zeros(hidden), torch.ones(hidden))  # fmt: skip
    proc = AgentProcess(agent, SamplingParams(temperature=1.0), max_steps=2, max_tokens=48)
    cond = episode(split_tasks("maze", "hard", 1)[0])
    plain = proc.init(cond, 4, seed=3)
    proc.propose(plain)
    state, steps, logits = steered_episodes(proc, cond, 4, acts, 0.0, seed=3)
    assert proc.preview(state) != proc.preview(plain)
    assert len(steps.actions) == len(steps.rewards) == logits.shape[0] >= 4
    assert torch.equal(model(**ids).logits, before)
    assert all(not layer._forward_pre_hooks for layer in decoder_layers(model))


def test_train_ctrls_saves_actions_and_policy_and_the_method_runs_them(agent, trained):
    out, record = trained
    saved = json.loads((out / "ctrls.json").read_text())
    assert saved["model_fingerprint"] == model_fingerprint("builtin:agent") and saved["layer"] == 2
    assert sum(saved["cluster_sizes"]) == saved["step_states"] == record["step_states"] >= 3
    assert record["command"].startswith("steerable agent train-ctrls")
    _, method = make_method(f"ctrls:policy={out}:epsilon=0.5")
    proc = AgentProcess(agent, SamplingParams(temperature=1.0), max_steps=6)
    cond = episode(split_tasks("maze", "easy", 1)[0])
    res = method.run(proc, OracleValue(), 3, cond, seed=0)
    counts = res.info["counts"]
    assert len(res.candidates) == 3 and res.cost.generated_tokens > 0
    assert sum(counts[f"latent_action_{k}"] for k in range(3)) == counts["steered_turns"] >= 3
    assert 0 <= counts["epsilon_fired"] <= counts["steered_turns"]
    assert counts["latent_state_tokens"] >= counts["steered_turns"] * len(cond.prompt)  # one char a token
    again = method.run(proc, OracleValue(), 3, cond, seed=0)
    assert again.text == res.text and again.info == res.info


def test_bad_options_and_artifacts_are_one_line_errors(agent, trained, tmp_path):
    out, _ = trained
    with pytest.raises(ConfigError, match="epsilon"):
        make_method("ctrls:epsilon=2")
    with pytest.raises(ConfigError, match="no option temperature"):
        make_method("ctrls:temperature=2")
    with pytest.raises(InputError, match="train-ctrls"):
        LatentActions.load(tmp_path, model_fingerprint("builtin:agent"))
    with pytest.raises(InputError, match="train-ctrls --out"):
        make_method(f"ctrls:policy={tmp_path}")
    with pytest.raises(InputError, match="another model"):
        LatentActions.load(out, model_fingerprint("builtin"))
    with pytest.raises(ConfigError, match="scorer"):
        Ctrls(policy=str(out)).run(AgentProcess(agent), None, 2, episode(split_tasks("maze", "easy", 1)[0]))
    with pytest.raises(ConfigError, match="--layer 9"):
        train_ctrls(CtrlsTrainConfig(out=str(tmp_path), layer=9), agent, "x")
    with pytest.raises(ConfigError, match="--env"):
        train_ctrls(CtrlsTrainConfig(out=str(tmp_path), env="chess"), agent, "x")


def test_the_shipped_policy_is_bound_to_builtin_agent_and_runs(agent):
    _, method = make_method("ctrls")
    acts = method.actions(agent.model)
    assert acts.k == 8 and acts.layer == 2 and acts.strength == 1.0
    proc = AgentProcess(agent, SamplingParams(temperature=1.0), max_steps=6)
    res = method.run(proc, OracleValue(), 2, episode(split_tasks("maze", "easy", 1)[0]), seed=1)
    assert len(res.candidates) == 2 and res.info["counts"]["steered_turns"] >= 2
