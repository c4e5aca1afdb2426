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
    summary = train_rl(_cfg(tmp_path, tiny_dir, algo=algo), progress=False)
    assert summary["steps"] == 1
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "curves.png").exists()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if r.get("step") == 1 and "reward" in r)
    assert {"accuracy", "mean_length", "entropy"} <= set(step)
    if algo in ("clip_cov", "kl_cov"):
        assert "loss/cov_mean" in step
    if algo == "icpo":  # one rollout of each group of 2 came from the demo-augmented prompt
        assert step["loss/off_policy_frac"] == 0.5 and "icpo/demo_accuracy" in step


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
