"""Short TRL runs on a tiny random model: every algorithm, resume, budgets, errors."""

import json

import pytest

pytest.importorskip("trl")

from steerable.errors import ConfigError  # noqa: E402
from steerable.rl.algos import ALGOS  # noqa: E402
from steerable.rl.run import RLRunConfig, train_rl  # noqa: E402

pytestmark = [pytest.mark.usefixtures("rl_rows_once"), pytest.mark.slow]  # TRL training steps


def _cfg(out, model, **kw):
    base = dict(
        out=str(out),
        model=model,
        task="builtin:easy",
        steps=1,
        minutes=None,
        prompts_per_step=2,
        group=2,
        max_completion=8,
        eval_every=0,
        eval_n=4,
        save_every=1,
        device="cpu",
    )
    return RLRunConfig(**{**base, **kw})


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_every_algorithm_completes_a_step(tmp_path, tiny_dir, algo):
    trees = {"etmr_forks": 1, "etmr_branches": 1} if algo == "ettrl" else {}  # groups of 2: one tree, one fork
    task = {"task": "builtin:agent:lookup:easy", "max_completion": 32} if algo == "eapo" else {}  # rounds: agents'
    summary = train_rl(_cfg(tmp_path, tiny_dir, algo=algo, options=trees, **task), progress=False)
    assert summary["steps"] == 1
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "curves.png").exists()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if r.get("step") == 1 and "reward" in r)
    assert {"accuracy", "mean_length", "entropy"} <= set(step)
    if algo in ("clip_cov", "kl_cov"):
        assert "loss/cov_mean" in step
    if algo == "icpo":  # one rollout of each group of 2 came from the demo-augmented prompt
        assert step["loss/off_policy_frac"] == 0.5 and "icpo/demo_accuracy" in step
    if algo == "ettrl":  # the branch shares its tree's prefix: fewer tokens sampled than trained
        assert 0.5 <= step["etmr/token_share"] <= 1.0
    if algo == "brpo":  # 4 rollouts x 4 budgets x 4 answers sampled after the cuts, and trained
        assert step["brpo/answer_rows"] == 64
    if algo == "grpo_pp":  # dynamic sampling ran
        assert "dynamic/groups_refilled" in step and "dynamic/groups_dropped" in step
    if algo == "mdpo":
        assert step["loss/mdpo_kl_weight"] >= 1.0
    if algo == "grpo":  # the output is a model every command accepts
        from steerable.lm.local import LocalGenerator
        from steerable.lm.types import SamplingParams

        gen = LocalGenerator.from_pretrained(str(tmp_path), device="cpu")
        assert gen.generate(["Q: 1+1=\n"], SamplingParams(max_new_tokens=3, temperature=0))[0].token_ids


def test_fork_points_are_the_highest_entropy_tokens():
    from steerable.rl.rollouts import fork_points

    assert fork_points([0.1, 0.9, 0.3, 0.5, 2.0], 2) == [1, 3]  # the last token (EOS) is not a fork point
    assert fork_points([0.4, 0.2], 3) == [0, 0, 0]  # fewer candidates than forks: repeated
    assert fork_points([], 2) == [0, 0]


def test_etmr_trees_share_prefixes_and_keep_groups_whole(tiny_dir):
    import torch

    from steerable.lm.loading import load_model
    from steerable.rl.rollouts import etmr_rollout, token_entropies

    model, tok = load_model(tiny_dir, device="cpu")

    class Stub:  # what the rollout reads from TRL's trainer
        num_generations, temperature, max_completion_length, processing_class = 6, 1.0, 12, tok
        _metrics = {"train": __import__("collections").defaultdict(list)}

    Stub.model = model
    model.train()
    torch.manual_seed(0)
    prompts = ["Q: 1+2=\n"] * 6 + ["Q: 3*4=\n"] * 6
    out = etmr_rollout(forks=2, branches=1)(prompts, Stub)  # trees of 1 + 2: two trees per prompt
    assert model.training  # sampling switched to eval mode and back
    assert len(out["completion_ids"]) == 12 and out["prompt_ids"][5] == out["prompt_ids"][0] != out["prompt_ids"][6]
    assert all(len(c) == len(lp) <= 12 for c, lp in zip(out["completion_ids"], out["logprobs"], strict=True))
    for t in range(0, 12, 3):  # each tree then its two branches, forked at its two highest-entropy tokens
        tree = out["completion_ids"][t]
        ent = token_entropies(model, [out["prompt_ids"][t] + tree], [len(out["prompt_ids"][t])], 1.0)[0]
        want = sorted(range(max(1, len(tree) - 1)), key=lambda j: -ent[j])[:2]
        for b, j in zip((1, 2), want, strict=True):
            assert out["completion_ids"][t + b][:j] == tree[:j]
    assert Stub._metrics["train"]["etmr/token_share"][0] < 1.0
    with pytest.raises(ConfigError, match="multiple of 3"):
        etmr_rollout(forks=2, branches=1)(["p"] * 4, type("S", (Stub,), {"num_generations": 4}))


def test_bad_settings_are_clear_errors(tmp_path, tiny_dir):
    with pytest.raises(ConfigError, match="algo must be one of 'grpo'"):
        train_rl(_cfg(tmp_path, tiny_dir, algo="ppo9"), progress=False)
    with pytest.raises(ConfigError, match="group"):
        train_rl(_cfg(tmp_path, tiny_dir, group=1), progress=False)
    with pytest.raises(ConfigError, match="template must be one of 'none'"):
        train_rl(_cfg(tmp_path, tiny_dir, template="vibes"), progress=False)
    with pytest.raises(ConfigError, match="unknown reward"):
        train_rl(_cfg(tmp_path, tiny_dir, reward="vibes"), progress=False)
    with pytest.raises(ConfigError, match="no option kl_ratio: use "):
        train_rl(_cfg(tmp_path, tiny_dir, options={"kl_ratio": 0.1}), progress=False)
    with pytest.raises(ConfigError, match="iterations must be >= 1"):
        train_rl(_cfg(tmp_path, tiny_dir, iterations=0), progress=False)
    with pytest.raises(ConfigError, match="minibatches must be >= 1"):
        train_rl(_cfg(tmp_path, tiny_dir, minibatches=0), progress=False)
    with pytest.raises(ConfigError, match="only label-free test-time RL"):
        train_rl(_cfg(tmp_path, tiny_dir, task="builtin:easy:test"), progress=False)  # grpo would see the answers
    with pytest.raises(ConfigError, match="builtin:SPLIT:test"):
        train_rl(_cfg(tmp_path, tiny_dir, task="builtin:easy:dev"), progress=False)
    with pytest.raises(ConfigError, match="needs --group a multiple of it"):
        train_rl(_cfg(tmp_path, tiny_dir, minibatches=4, options={"dynamic_sampling": True}), progress=False)
    with pytest.raises(ConfigError, match="aspo_k must be"):
        train_rl(_cfg(tmp_path, tiny_dir, algo="aspo", options={"aspo_k": 3.0}), progress=False)
    with pytest.raises(ConfigError, match="--group 2 is not a multiple of 4"):
        train_rl(_cfg(tmp_path, tiny_dir, algo="ettrl"), progress=False)  # trees of 4, groups of 2


def test_iterations_reuse_a_generated_batch(tmp_path, tiny_dir, char_tokenizer, monkeypatch):
    # a PRM that scores every rollout differently, so the first pass moves the policy and the second sees it
    from conftest import graded_prm

    graded = graded_prm(char_tokenizer)
    monkeypatch.setattr("steerable.rl.run.builtin_prm", lambda: graded)
    train_rl(_cfg(tmp_path, tiny_dir, steps=2, iterations=2, lr=1e-2, reward="prm"), progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in rows if "loss/ratio_mean" in r}
    assert "completions/mean_length" in steps[1] and "completions/mean_length" not in steps[2]  # sampled once
    assert steps[1]["loss/ratio_mean"] == pytest.approx(1.0) and steps[2]["loss/ratio_mean"] != pytest.approx(1.0)


def test_test_time_rl_adapts_to_the_evaluation_problems(tmp_path, tiny_dir):
    from steerable.rl.session import held_in_rows, task_rows
    from steerable.tasks.builtin.arithmetic import eval_problems

    rows = task_rows("builtin:easy:test", 0, 0)
    assert [r["prompt"] for r in rows] == [p.prompt for p in eval_problems("easy", 200)]  # what eval scores
    assert held_in_rows("builtin:easy:test", 4, 0) == rows[:4]  # and reports on
    assert train_rl(_cfg(tmp_path, tiny_dir, algo="ttrl", task="builtin:easy:test"), progress=False)["steps"] == 1


def test_options_are_typed_rl_config_overrides():
    from steerable.rl.run import parse_options

    assert parse_options(["kl_cov_ratio=0.02", "etmr_forks = 2", "scale_std=false"]) == {
        "kl_cov_ratio": 0.02,
        "etmr_forks": 2,
        "scale_std": False,
    }
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_options(["kl_cov_ratio"])
    with pytest.raises(ConfigError, match="etmr_forks must be an integer"):
        parse_options(["etmr_forks=two"])


def test_prior_prompt_templates_prefix_the_training_prompts(char_tokenizer):
    from steerable.rl.rewards import TEMPLATES, apply_template

    for name in TEMPLATES:
        text = apply_template(name, "Q: 1+1=\n", char_tokenizer)
        assert text.endswith("Q: 1+1=\n") and (name == "none") == (text == "Q: 1+1=\n")

    class Ascii:  # a tokenizer that cannot write the template's letters
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text if c.isdigit() or c in "Q:+=\n "]}

        def decode(self, ids):
            return "".join(map(chr, ids))

    with pytest.raises(ConfigError, match="vocabulary"):
        apply_template("reasoning", "Q: 1+1=\n", Ascii())


def test_an_interrupted_run_keeps_a_checkpoint_and_resumes(tmp_path, tiny_dir, monkeypatch):
    import steerable.rl.rewards as rewards
    from steerable.errors import SteerableError

    real = rewards.exact_reward
    calls = []

    def flaky(extract):
        inner = real(extract)

        def exact(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return inner(*a, **k)

        return exact

    monkeypatch.setattr(rewards, "exact_reward", flaky)
    with pytest.raises(SteerableError, match="interrupted at step 1.*rerun"):
        train_rl(_cfg(tmp_path, tiny_dir, steps=5, save_every=100), progress=False)
    assert any((tmp_path / "checkpoints").glob("checkpoint-1"))
    monkeypatch.setattr(rewards, "exact_reward", real)
    assert train_rl(_cfg(tmp_path, tiny_dir, steps=2, save_every=100), progress=False)["steps"] == 2


def test_dynamic_sampling_refills_groups_without_a_reward_spread(tmp_path, tiny_dir, monkeypatch):
    import steerable.rl.rewards as rewards

    def parity(extract):  # a reward with a spread in some groups and none in others
        def exact(prompts, completions, **_):
            return [float(len(c) % 2) for c in completions]

        return exact

    monkeypatch.setattr(rewards, "exact_reward", parity)
    opts = {"dynamic_sampling": True, "dynamic_sampling_rounds": 20}
    train_rl(_cfg(tmp_path, tiny_dir, steps=3, prompts_per_step=4, options=opts), progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "dynamic/groups_refilled" in r]
    assert len(steps) == 3
    for r in steps:
        # every group of the first round without a spread was replaced (none left to drop), so the batch
        # trained on has a spread in every group while the logged reward statistics are the first round's
        assert r["dynamic/groups_dropped"] == 0
        assert r["dynamic/groups_refilled"] == pytest.approx(4 * r["frac_reward_zero_std"])
        assert r["adv/frac_zero_std"] == 0
    assert sum(r["dynamic/groups_refilled"] for r in steps) > 0


def test_brpo_cuts_after_whole_lines_and_answers_after_each_cut(local):
    import torch

    from steerable.rl.algos import RLConfig
    from steerable.rl.inputs import Batch, BatchInputs, Context

    tok = local.tokenizer
    prompt = tok("Q: 12+5*2=\n")["input_ids"]
    text = "12+5=17\n17*2=34\nA: 34"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token a character: the positions below are characters
    cfg = RLConfig(brpo_budgets=2, brpo_answers=4)
    batch = Batch(
        2,
        ["q", "q"],
        [text, text[:12]],
        [prompt, prompt],
        [ids, ids[:12]],
        ["34", "34"],
        torch.zeros(2),
        len(ids),
        torch.zeros(2, dtype=torch.bool),
    )
    x = BatchInputs(
        Context(
            local.model,
            tok,
            cfg,
            __import__("steerable.tasks.answers").tasks.answers.make_checker("builtin").extract,
            1.0,
            20,
            0,
            0.0,
        ),
        batch,
    )
    b = x.get("budgets")
    # budgets at 10 and 20 tokens: rollout 0 is cut after its first line (8), then keeps its thinking and "A: "
    # (19); rollout 1 (cut off mid-line at 12) after its first line both times
    assert b.cuts.tolist() == [[8, 19], [8, 8]]
    assert b.scores.shape == (2, 2, 4)
    # the model cannot answer before it has computed: after the first line it says 17, after both lines 34
    assert b.scores[0, 1].mean() > 0.5 > b.scores[0, 0].mean()
    # the sampled answers join the batch; rollout 0's own answer digits leave its loss
    (rows,) = x.extra_rows()
    assert rows.weights.sum() == 16  # 2 rollouts x 2 cuts x 4 answers, identical ones merged
    contexts = {tuple(p) for p in rows.prompt_ids}
    assert tuple(prompt + ids[:19]) in contexts
    assert tuple(prompt + ids[:8] + tok("A: ", add_special_tokens=False)["input_ids"]) in contexts
    assert x.loss_mask()[0].tolist() == [1.0] * 19 + [0.0] * (len(ids) - 19)


def test_the_entropy_bonus_reaches_the_gradient_through_trls_fused_head(tiny_dir):
    import torch
    from trl.trainer.utils import add_fused_lm_head

    from steerable.lm.loading import load_model
    from steerable.rl.algos import RLConfig
    from steerable.rl.losses import entropy_bonus

    model, _ = load_model(tiny_dir, device="cpu")
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    logp = torch.log_softmax(model(input_ids=ids).logits[:, -5:-1].float(), -1)
    want = -(logp.exp() * logp).sum(-1)  # the entropy at the 4 completion positions, from the logits
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))  # what GRPOTrainer computes entropies with
    labels = ids.clone()
    labels[:, :2] = -100
    ent = model(input_ids=ids, labels=labels, fused_lm_head=True).entropy[:, -4:]
    assert torch.allclose(ent, want, atol=1e-5)
    bonus = entropy_bonus(ent, torch.ones(1, 4), RLConfig(entropy_coef=0.5))
    assert bonus.item() == pytest.approx(0.5 * want.mean().item(), rel=1e-5)
    bonus.backward()  # the trainer subtracts it from the loss: it must move the weights
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_an_algorithm_whose_inputs_nobody_computes_is_refused_before_sampling():
    from steerable.rl.algos import ADVANTAGES, Algo, check_inputs

    def needs_the_moon(rewards, group_size, cfg, *, moon):
        return rewards, {}

    ADVANTAGES["moon"] = needs_the_moon
    try:
        with pytest.raises(ConfigError, match="input 'moon'"):
            check_inputs(Algo("moon", "grpo"))
    finally:
        del ADVANTAGES["moon"]
    with pytest.raises(ConfigError, match="unknown loss"):
        check_inputs(Algo("grpo", "vibes"))
