"""Short TRL runs on a tiny random model: every algorithm, resume, budgets, errors."""

import json

import pytest

pytest.importorskip("trl")

from conftest import tiny_model  # noqa: E402
from steerable.errors import ConfigError  # noqa: E402
from steerable.rl.run import RLRunConfig, train_rl  # noqa: E402
from steerable.rl.trainer import ALGOS  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, char_tokenizer):
    d = tmp_path_factory.mktemp("tiny")
    tiny_model("llama", char_tokenizer, seed=1).save_pretrained(d)
    char_tokenizer.save_pretrained(d)
    return str(d)


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
    summary = train_rl(_cfg(tmp_path, tiny_dir, algo=algo, options=trees), progress=False)
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


def test_fork_points_are_the_highest_entropy_tokens():
    from steerable.rl.trainer import fork_points

    assert fork_points([0.1, 0.9, 0.3, 0.5, 2.0], 2) == [1, 3]  # the last token (EOS) is not a fork point
    assert fork_points([0.4, 0.2], 3) == [0, 0, 0]  # fewer candidates than forks: repeated
    assert fork_points([], 2) == [0, 0]


def test_etmr_trees_share_prefixes_and_keep_groups_whole(tiny_dir):
    import torch

    from steerable.lm.loading import load_model
    from steerable.rl.trainer import etmr_rollout, token_entropies

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


def test_output_is_a_model_every_command_accepts(tmp_path, tiny_dir):
    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams

    train_rl(_cfg(tmp_path, tiny_dir), progress=False)
    gen = LocalGenerator.from_pretrained(str(tmp_path), device="cpu")
    assert gen.generate(["Q: 1+1=\n"], SamplingParams(max_new_tokens=3, temperature=0))[0].token_ids


def test_resume_continues_from_the_checkpoint(tmp_path, tiny_dir):
    train_rl(_cfg(tmp_path, tiny_dir, steps=2), progress=False)
    summary = train_rl(_cfg(tmp_path, tiny_dir, steps=3), progress=False)
    assert summary["steps"] == 3
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(3) >= 1 and steps.count(1) == 1  # step 1 was not redone


def test_time_budget_stops_the_run(tmp_path, tiny_dir):
    summary = train_rl(_cfg(tmp_path, tiny_dir, steps=None, minutes=0.0001), progress=False)
    assert summary["steps"] == 1


def test_bad_settings_are_clear_errors(tmp_path, tiny_dir):
    with pytest.raises(ConfigError, match="unknown algorithm"):
        train_rl(_cfg(tmp_path, tiny_dir, algo="ppo9"), progress=False)
    with pytest.raises(ConfigError, match="group"):
        train_rl(_cfg(tmp_path, tiny_dir, group=1), progress=False)
    with pytest.raises(ConfigError, match="unknown prompt template"):
        train_rl(_cfg(tmp_path, tiny_dir, template="vibes"), progress=False)
    with pytest.raises(ConfigError, match="unknown reward"):
        train_rl(_cfg(tmp_path, tiny_dir, reward="vibes"), progress=False)
    with pytest.raises(ConfigError, match="unknown option 'kl_ratio'"):
        train_rl(_cfg(tmp_path, tiny_dir, options={"kl_ratio": 0.1}), progress=False)
    with pytest.raises(ConfigError, match="--iterations must be >= 1"):
        train_rl(_cfg(tmp_path, tiny_dir, iterations=0), progress=False)
    with pytest.raises(ConfigError, match="--minibatches must be >= 1"):
        train_rl(_cfg(tmp_path, tiny_dir, minibatches=0), progress=False)
    with pytest.raises(ConfigError, match="only label-free test-time RL"):
        train_rl(_cfg(tmp_path, tiny_dir, task="builtin:easy:test"), progress=False)  # grpo would see the answers
    with pytest.raises(ConfigError, match="builtin:SPLIT:test"):
        train_rl(_cfg(tmp_path, tiny_dir, task="builtin:easy:dev"), progress=False)
    with pytest.raises(ConfigError, match="--group 2 is not a multiple of 4"):
        train_rl(_cfg(tmp_path, tiny_dir, algo="ettrl"), progress=False)  # trees of 4, groups of 2


def test_iterations_reuse_a_generated_batch(tmp_path, tiny_dir):
    # the PRM scores every rollout differently, so the first pass moves the policy and the second sees it
    train_rl(_cfg(tmp_path, tiny_dir, steps=2, iterations=2, lr=1e-2, reward="prm"), progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in rows if "loss/ratio_mean" in r}
    assert "completions/mean_length" in steps[1] and "completions/mean_length" not in steps[2]  # sampled once
    assert steps[1]["loss/ratio_mean"] == pytest.approx(1.0) and steps[2]["loss/ratio_mean"] != pytest.approx(1.0)


def test_test_time_rl_adapts_to_the_evaluation_problems(tmp_path, tiny_dir):
    from steerable.rl.run import _held_in, _items
    from steerable.tasks.builtin.arithmetic import eval_problems

    rows = _items("builtin:easy:test", 0, 0)
    assert [r["prompt"] for r in rows] == [p.prompt for p in eval_problems("easy", 200)]  # what eval scores
    assert _held_in("builtin:easy:test", 4, 0) == rows[:4]  # and reports on
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
    with pytest.raises(ConfigError, match="etmr_forks needs a int"):
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
