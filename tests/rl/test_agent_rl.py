"""RL over the agent world: episodes as TRL rollouts with the environment mask, the mask out of the loss's
gradient, ASPO's tool-call position, and IGPO's turns as actions with their observations."""

import json

import pytest
import torch

from steerable.errors import ConfigError
from steerable.lm.local import LocalGenerator
from steerable.lm.sequences import Sequences
from steerable.lm.types import StepOutput, Usage
from steerable.rl import agent
from steerable.tasks.agent.data import _calc_steps, mental

TASKS = [
    {"env": "calculator", "expression": "37*48+19", "answer": 1795},
    {"env": "calculator", "expression": "12+30*2", "answer": 84},
]


class Scripted(LocalGenerator):
    """Writes whole lines instead of sampling. At its first line a row picks a style by its place in the batch:
    even rows call the tool for every step and answer right, odd rows work every step in text and answer
    wrong (the truth + 1). The model is only there for the trainer; nothing is fed through it here."""

    def start(self, prompts, n=1):
        ids = [self.encode(p) for p in prompts for _ in range(n)]
        return Sequences(ids, [len(x) for x in ids], [k // n for k in range(len(ids))])

    def _next(self, seqs, r: int) -> tuple[str, bool]:
        prompt = self.tokenizer.decode(seqs.token_ids[r][: seqs.prompt_lens[r]], skip_special_tokens=True)
        expr = prompt.split("Q: ")[1].split("=")[0]
        done = self.tokenizer.decode(seqs.generated(r), skip_special_tokens=True)
        mine = [ln for ln in done.split("\n") if ln and not ln.startswith("= ")]
        tool = mine[0].startswith(">>>") if mine else r % 2 == 0
        steps = _calc_steps(expr)
        if len(mine) < len(steps):
            a, op, b, res = steps[len(mine)]
            return (f">>> {a}{op}{b}\n" if tool else mental(a, op, b, res) + "\n"), False
        return f"A: {steps[-1][3] + (0 if tool else 1)}", True

    def step(self, seqs, params, stop=None, max_tokens=None, rows=None, top=0):
        rows = set(range(len(seqs)) if rows is None else rows)
        new, reasons = [], []
        for r in range(len(seqs)):
            if r not in rows or seqs.finished[r]:
                new.append(())
                reasons.append(None)
                continue
            text, last = self._next(seqs, r)
            toks = self.tokenizer(text, add_special_tokens=False)["input_ids"] + ([self.eos_ids[0]] if last else [])
            seqs.token_ids[r].extend(toks)
            seqs.pending[r] = []
            seqs.finished[r] = last
            new.append(tuple(toks))
            reasons.append("eos" if last else "stop")
        texts = tuple(self.tokenizer.decode(list(t), skip_special_tokens=True) for t in new)
        return StepOutput(texts, tuple(new), tuple(tuple(-0.5 for _ in t) for t in new), tuple(reasons), Usage())


@pytest.fixture
def scripted(monkeypatch):
    monkeypatch.setattr("steerable.lm.local.LocalGenerator", Scripted)


def test_agent_task_names_parse_and_bad_ones_are_one_line_errors():
    assert agent.parse_task("builtin:medium") is None
    t = agent.parse_task("builtin:agent:calculator:hard")
    assert (t.env, t.split, t.tools, t.marker) == ("calculator", "hard", True, ">>>")
    assert agent.parse_task("builtin:agent:calculator:hard:text").tools is False
    assert agent.parse_task("builtin:agent:lookup:easy").marker == "get "
    with pytest.raises(ConfigError, match="write builtin:agent:ENV:SPLIT"):
        agent.parse_task("builtin:agent:calculator")
    with pytest.raises(ConfigError, match="only the calculator"):
        agent.parse_task("builtin:agent:lookup:hard:text")


def test_training_rows_never_hold_a_held_out_task_and_evaluation_rows_are_the_split():
    from steerable.tasks.agent.data import held_out, split_tasks

    t = agent.parse_task("builtin:agent:lookup:hard")
    rows = agent.train_rows(t, 50, seed=0)
    assert not any(held_out(json.loads(r["task"])) for r in rows)
    assert rows == agent.train_rows(t, 50, seed=0) != agent.train_rows(t, 50, seed=1)
    assert all(r["prompt"].startswith("[get] Q: find k") and r["answer"].isdigit() for r in rows)
    ev = agent.eval_rows(t, 5)
    assert [json.loads(r["task"]) for r in ev] == split_tasks("lookup", "hard", 5, 0)


def test_episodes_mask_exactly_the_observations_the_environment_wrote(scripted, tiny_dir):
    from steerable.lm.loading import load_model

    model, tok = load_model(tiny_dir, device="cpu")
    ep = agent.run_episodes(model, tok, TASKS, 2, 1.0, 200, marker=">>>")
    assert ep.solved == [True, False, True, False]  # even rows call the tool and answer right
    assert ep.tool_calls == [2, 0, 2, 0]
    for ids, mask, lps, text in zip(ep.completion_ids, ep.env_mask, ep.logprobs, ep.texts, strict=True):
        assert len(ids) == len(mask) == len(lps)
        written = tok.decode([t for t, m in zip(ids, mask, strict=True) if m == 0])
        observations = "".join(ln + "\n" for ln in text.split("\n") if ln.startswith("= "))
        assert written == observations  # every observation token masked, no model token masked
        assert all(lp == 0.0 for lp, m in zip(lps, mask, strict=True) if m == 0)
        assert all(lp == -0.5 for lp, m in zip(lps, mask, strict=True) if m == 1)
    assert ep.texts[0] == ">>> 37*48\n= 1776\n>>> 1776+19\n= 1795\nA: 1795"
    assert ep.completion_ids[0][-1] == tok.eos_token_id  # the sampled EOS is kept (trained)
    s = ep.stats
    assert s["env_tokens"] == pytest.approx((len("= 1776\n= 1795\n") + len("= 42\n= 84\n")) / 4)
    assert s["generated_tokens"] + s["env_tokens"] == pytest.approx(sum(map(len, ep.completion_ids)) / 4)
    assert s["tool_call_rate"] == 0.5 and s["first_call"] == 0.0 and s["solved"] == 0.5
    cut = agent.run_episodes(model, tok, TASKS[:1], 1, 1.0, 12)  # the cap counts observations too
    assert len(cut.completion_ids[0]) == len(cut.env_mask[0]) == 12


def _rl_cfg(out, model, **kw):
    from steerable.rl.run import RLRunConfig

    base = dict(out=str(out), model=model, task="builtin:agent:calculator:easy", steps=1, minutes=None,
                prompts_per_step=2, group=2, max_completion=64, eval_every=0, eval_n=2, save_every=5,
                device="cpu")  # fmt: skip
    return RLRunConfig(**{**base, **kw})


@pytest.mark.slow
def watch_loss_gradient(monkeypatch) -> dict:
    """Patches the trainer so that, after a step, ``seen`` holds its inputs, the per-token log-probabilities
    and the loss's gradient with respect to them."""
    from steerable.rl.trainer import SteerableGRPOTrainer

    seen: dict = {}
    real_logps, real_loss = SteerableGRPOTrainer._logps_and_entropies, SteerableGRPOTrainer._compute_loss

    def logps(self, model, inputs):
        lp, ent = real_logps(self, model, inputs)
        seen["logps"], seen["inputs"] = lp, inputs
        return lp, ent

    def loss(self, model, inputs):
        out = real_loss(self, model, inputs)
        seen["grad"] = torch.autograd.grad(out, seen["logps"], retain_graph=True)[0]
        return out

    monkeypatch.setattr(SteerableGRPOTrainer, "_logps_and_entropies", logps)
    monkeypatch.setattr(SteerableGRPOTrainer, "_compute_loss", loss)
    return seen


def test_loss_gradient_is_zero_on_environment_tokens(scripted, tiny_dir, tmp_path, monkeypatch):
    """Through TRL: the rollout's env_mask becomes TRL's tool_mask, and the loss's gradient with respect to
    the log-probability of every environment token is exactly 0 (and not 0 on the model's tokens)."""
    pytest.importorskip("trl")
    from steerable.rl.run import train_rl

    seen = watch_loss_gradient(monkeypatch)
    train_rl(_rl_cfg(tmp_path, tiny_dir), progress=False)
    inputs, grad = seen["inputs"], seen["grad"]
    real = inputs["completion_mask"].bool()
    env = real & (inputs["tool_mask"] == 0)
    assert int(env.sum()) > 0 and bool((grad[env] == 0).all())
    assert bool((grad[real & ~env] != 0).all())  # every model token carries its advantage
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if r.get("step") == 1 and "reward" in r)
    assert step["reward"] == 0.5 and step["accuracy"] == 0.5  # the environment's verdict
    assert step["agent/env_tokens"] > 0 and step["agent/tool_call_rate"] == 0.5
    # TRL counts only the model's tokens as the completion's length once a mask is given
    assert step["completions/mean_length"] == pytest.approx(step["agent/generated_tokens"])


@pytest.mark.slow
def test_aspo_on_agent_rollouts_finds_the_first_tool_line(scripted, tiny_dir, tmp_path):
    """ASPO's position is the first ``>>>`` line, set from the task without --set aspo_marker."""
    pytest.importorskip("trl")
    from steerable.rl.run import _plan, train_rl

    assert _plan(_rl_cfg(tmp_path, tiny_dir, algo="aspo")).rl.aspo_marker == ">>>"
    assert _plan(_rl_cfg(tmp_path, tiny_dir, algo="aspo", options={"aspo_marker": "A:"})).rl.aspo_marker == "A:"
    train_rl(_rl_cfg(tmp_path, tiny_dir, algo="aspo"), progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if r.get("step") == 1 and "reward" in r)
    assert step["adv/aspo_eligible_frac"] == 0.5  # the right rows, and only they, call the tool
    with pytest.raises(ConfigError, match="samples its own rollouts"):
        train_rl(_rl_cfg(tmp_path, tiny_dir, algo="icpo"), progress=False)
    with pytest.raises(ConfigError, match="prm reward"):
        train_rl(_rl_cfg(tmp_path / "x", tiny_dir, reward="prm"), progress=False)


def test_first_tool_call_is_the_first_line_starting_with_the_marker():
    from steerable.rl.inputs import first_line_at

    assert first_line_at(">>> 2*3\n= 6\nA: 6", ">>>") == 0
    assert first_line_at("12+30=42\n>>> 42*45\n= 1890", ">>>") == 9
    assert first_line_at("x >>> 1\nA: 1", ">>>") is None  # mid-line is not a call
    assert first_line_at("anything", "") is None


# ---- ASPO and the reward shaping it replaces, by hand -------------------------------------------------


def test_aspo_reward_shaping_matches_hand_values_and_rewrites_all_correct_groups():
    from steerable.rl.algos import ADVANTAGES, RLConfig

    cfg = RLConfig(aspo_shaping_delta=-1.0, aspo_shaping_clip=1.0, eps_std=1e-4)
    # group 0: three right (rows 0-2), one wrong; rows 0 and 1 call the tool at 10 and 30
    # group 1: all right, all call the tool at 0, 4, 8, 100
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    tool = torch.tensor([True, True, False, True, True, True, True, True])
    pos = torch.tensor([10.0, 30.0, 5.0, 20.0, 0.0, 4.0, 8.0, 100.0])
    adv, m = ADVANTAGES["aspo_reward_shaping"](r, 4, cfg, correct=r.bool(), tool_used=tool, positions=pos)
    # group 0: mean p 20, population std 10: z = -1, +1 -> R = 2, 0, 1, 0 (the late right call = a wrong answer)
    g0 = torch.tensor([2.0, 0.0, 1.0, 0.0])
    # group 1: mean 28, std sqrt(((28)^2 + 24^2 + 20^2 + 72^2) / 4) = 41.76; z clipped to +-1
    p1 = torch.tensor([0.0, 4.0, 8.0, 100.0])
    z = ((p1 - 28) / ((p1 - 28).pow(2).mean().sqrt())).clamp(-1, 1)
    g1 = 1 - z
    want = torch.cat([(g - g.mean()) / (g.std() + 1e-4) for g in (g0, g1)])
    assert adv.tolist() == pytest.approx(want.tolist(), rel=1e-5)
    # the all-correct group, where GRPO and ASPO leave every advantage at 0, gets advantages of size ~1:
    # the earliest call is pushed up, the latest down, though all four answers are right
    assert adv[4] > 0.5 and adv[7] < -1.0
    assert m["frac_groups_all_correct"] == 0.5 and m["aspo_eligible_frac"] == 6 / 8
    assert m["shaping_fired_frac"] == 6 / 8  # no eligible rollout sits exactly at its group's mean


def test_aspo_leaves_all_correct_groups_alone_where_shaping_does_not():
    from steerable.rl.algos import ADVANTAGES, ALGOS, rl_config_for

    r = torch.ones(4)
    tool = torch.ones(4, dtype=torch.bool)
    pos = torch.tensor([0.0, 4.0, 8.0, 100.0])
    lens = torch.full((4,), 120.0)
    aspo, _ = ADVANTAGES["aspo"](
        r, 4, rl_config_for(ALGOS["aspo"]), correct=r.bool(), tool_used=tool, positions=pos, lengths=lens
    )
    assert aspo.tolist() == [0.0] * 4  # Eq. 2's clip at k|A| = 0
    # and it says so: eligible rollouts, none shifted
    _, m = ADVANTAGES["aspo"](
        r, 4, rl_config_for(ALGOS["aspo"]), correct=r.bool(), tool_used=tool, positions=pos, lengths=lens
    )
    assert m["aspo_eligible_frac"] == 1.0 and m["aspo_shifted_frac"] == 0.0 and m["aspo_shift_abs_mean"] == 0.0


# ---- IGPO's turns on agent rollouts -------------------------------------------------------------------


def test_turns_end_after_each_observation():
    from steerable.rl.inputs import turn_ends

    assert turn_ends([1, 1, 0, 0, 1, 0, 1, 1]) == [4, 6]
    assert turn_ends([1, 1, 0]) == [3]
    assert turn_ends([1, 1, 1]) == []


def test_igpo_gains_on_agent_rollouts_are_the_answer_probability_after_each_observation(tiny_dir):
    from steerable.lm.loading import load_model
    from steerable.rl.algos import RLConfig
    from steerable.rl.inputs import Batch, BatchInputs, Context, answer_probabilities

    model, tok = load_model(tiny_dir, device="cpu")
    prompt = "[get] Q: find k3\n"
    parts = [("get k3\n", 1), ("= k7\n", 0), ("get k7\n", 1), ("= 42\n", 0), ("A: 42", 1)]
    ids, mask = [], []
    for text, m in parts:
        t = tok(text, add_special_tokens=False)["input_ids"]
        ids += t
        mask += [m] * len(t)
    p_ids = tok(prompt)["input_ids"]
    batch = Batch(1, [prompt], [tok.decode(ids)], [p_ids], [ids], ["42"], torch.ones(1), len(ids) + 3,
                  torch.zeros(1, dtype=torch.bool), torch.ones(1, dtype=torch.bool), [mask])  # fmt: skip
    ctx = Context(model, tok, RLConfig(), lambda s: None, 1.0, 64, 0, 0.0)
    x = BatchInputs(ctx, batch)
    gains, turns = x.get("gains"), x.get("token_turns")
    first, second = (
        len(tok("get k3\n= k7\n", add_special_tokens=False)["input_ids"]),
        len(tok("get k3\n= k7\nget k7\n= 42\n", add_special_tokens=False)["input_ids"]),
    )
    a, probe = tok("42", add_special_tokens=False)["input_ids"], tok("A: ", add_special_tokens=False)["input_ids"]
    p = answer_probabilities(model, [(p_ids + ids[:e] + probe, a) for e in (0, first, second)])
    assert gains[0].tolist() == pytest.approx([p[1] - p[0], p[2] - p[1]], abs=1e-6)  # two actions, two gains
    assert turns[0, :first].tolist() == [0] * first and turns[0, first:second].tolist() == [1] * (second - first)
    assert turns[0, second : len(ids)].tolist() == [2] * (len(ids) - second)  # the answer: the outcome's turn
    assert turns[0, len(ids) :].tolist() == [-1] * 3
    assert bool(x.get("correct")[0])  # the environment's verdict, not the text's
