"""Issue 12 section 4: each of these was a traceback or silent wrong work; now one line on stderr and exit 2."""

import json

import pytest
import torch

BAD_UTF8 = b'{"prompt": "caf\xe9", "answer": "1"}\n'
SURROGATE = '{"prompt": "a\\ud800", "answer": "1"}\n'


@pytest.fixture
def files(tmp_path):
    (tmp_path / "latin1.jsonl").write_bytes(BAD_UTF8)
    (tmp_path / "surrogate.jsonl").write_text(SURROGATE)
    (tmp_path / "null.jsonl").write_text(
        '{"prompt": "Q: 1+1=\\n", "answer": 2}\n{"prompt": "Q: 2+2=\\n", "answer": null}\n'
    )
    (tmp_path / "two.jsonl").write_text(
        '{"prompt": "Q: 1+1=\\n", "answer": 2}\n{"prompt": "Q: 2+2=\\n", "answer": 4}\n'
    )
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "dir").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--prompts", "{f}/latin1.jsonl"], "latin1.jsonl:1 is not UTF-8 text"),
        (["--prompts", "{f}/dir"], "dir is a directory"),
        (["--prompts", "{f}/surrogate.jsonl"], "surrogate.jsonl:1 holds a lone surrogate"),
        (["a\\ud800b"], "prompt 1 holds a lone surrogate"),
        (["x", "--temperature", "nan"], "--temperature must be a finite number (got nan)"),
        (["x", "--temperature", "1e-300"], "temperature must be 0 (greedy) or >= 0.001"),
        (["x", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["x", "--batch-size", "-1"], "--batch-size must be >= 1"),
    ],
)
def test_generate_refuses(fails, files, args, needle):
    fails(needle, "generate", *(a.format(f=files) for a in args))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--task", "{f}/latin1.jsonl"], "latin1.jsonl:1 is not UTF-8 text"),
        (["--task", "{f}/dir"], "dir is a directory"),
        (["--task", "{f}/surrogate.jsonl"], "holds a lone surrogate"),
        (["--task", "{f}/null.jsonl"], "null.jsonl:2 needs a string 'prompt' and a non-null 'answer'"),
        (["--budgets", "nan"], "--budgets takes integers (got 'nan')"),
        (["--budgets", "inf"], "--budgets takes integers (got 'inf')"),
        (["--budgets", "2.7"], "--budgets takes integers (got '2.7')"),
        (["--budgets", "1000000000"], "--budgets[0] must be >= 1 and <= 100000000"),
        (["--budgets", "5000"], "--budgets 5000 is more than the 4096 samples a run may use"),
        (["--budgets", "4,4"], "--budgets lists 4 twice"),
        (["--methods", ","], "--methods has an empty item (got ',')"),
        (["--methods", ""], "--methods must have at least 1 item"),
        (["--limit", "0"], "--limit must be >= 1 (got 0)"),
        (["--limit", "-3"], "--limit must be >= 1 (got -3)"),
        (["--max-tokens", "0"], "--max-tokens must be >= 1"),
        (["--max-step-tokens", "-1"], "--max-step-tokens must be >= 1"),
        (["--delimiter", ""], "--delimiter must have at least 1 character (got empty)"),
        (["--delimiter", "\\ud800"], "--delimiter holds a lone surrogate"),
        (["--methods", "sc,pf", "--scorer", "none"], "--methods pf needs a scorer but --scorer is none"),
        (["--temperature", "nan"], "--temperature[0] must be a finite number"),
        (["--out", "{f}/a-file"], "a-file is a file: give a directory"),
        (["--out", "{f}/a-file/sub"], "cannot be made: Not a directory"),
    ],
)
def test_scale_refuses(fails, files, args, needle):
    base = ["scale", "--out", files / "out", "--limit", "1", "--methods", "sc", "--scorer", "oracle"]
    fails(needle, *base, *(a.format(f=files) for a in args))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--minutes", "-1"], "--minutes must be > 0 (got -1.0)"),
        (["--minutes", "nan"], "--minutes must be a finite number (got nan)"),
        (["--lr", "nan"], "--lr must be a finite number (got nan)"),
        (["--temperature", "0"], "--temperature must be > 0 and <= 100 (got 0.0)"),
        (["--temperature", "-1"], "--temperature must be > 0"),
        (["--steps", "0"], "--steps must be >= 1 (got 0)"),
        (["--steps", "-1"], "--steps must be >= 1 (got -1)"),
        (["--algo", "ppo"], "--algo must be one of 'grpo'"),
        (["--set", "kl_cov_ratio"], "--set 'kl_cov_ratio': write NAME=VALUE"),
        (["--out", "{f}/a-file"], "a-file is a file: give a directory"),
    ],
)
def test_train_rl_refuses_before_loading_anything(fails, files, args, needle):
    fails(needle, "train", "rl", "--out", files / "rl", *(a.format(f=files) for a in args))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--reward", "exact:nan"], "reward weight must be a finite number (got 'nan'"),
        (["--task", "{f}/two.jsonl", "--prompts-per-step", "4"], "two.jsonl has 2 rows but a step takes"),
        (["--task", "{f}/latin1.jsonl"], "latin1.jsonl:1 is not UTF-8 text"),
    ],
)
def test_train_rl_refuses_a_bad_reward_or_task(fails, files, args, needle):
    pytest.importorskip("trl")
    fails(
        needle,
        "train",
        "rl",
        "--out",
        files / "rl",
        "--steps",
        "1",
        "--device",
        "cpu",
        *(a.format(f=files) for a in args),
    )


@pytest.fixture(scope="module")
def nan_artifact(tmp_path_factory):
    from steerable.lm.local import LocalGenerator
    from steerable.steer.artifact import SteeringVector, fingerprint

    gen = LocalGenerator.from_pretrained("builtin", device="cpu")
    v = torch.full((gen.model.config.hidden_size,), float("nan"))
    art = SteeringVector("mean", "add", fingerprint(gen.model, gen.tokenizer), vector=v, layers=(1,))
    return art.save(tmp_path_factory.mktemp("nan") / "nan")


def test_steer_apply_and_eval_refuse_nan_vectors_and_strengths(fails, files, artifact, nan_artifact):
    fails("holds NaN or infinite values (vector)", "steer", "apply", "hi", "--artifact", nan_artifact)
    fails("holds NaN or infinite values", "steer", "eval", "--artifact", nan_artifact, "--n", "1")
    fails("--strength must be a finite number (got nan)", "steer", "apply", "hi", "--artifact", artifact,
          "--strength", "nan")  # fmt: skip
    fails("--strength must be a finite number (got inf)", "steer", "eval", "--artifact", artifact, "--strength", "inf")
    fails("latin1.jsonl:1 is not UTF-8 text", "steer", "apply", "--prompts", files / "latin1.jsonl",
          "--artifact", artifact)  # fmt: skip


def test_typed_escapes_keep_non_ascii_and_odd_backslashes(cli, artifact):
    r = cli("generate", "café\\n", "ends in \\", "\\x and \\d", "--max-new-tokens", "2", "--json", "--device", "cpu")
    assert r.code == 0, r.err
    assert [json.loads(x)["prompt"] for x in r.out.splitlines()] == ["café\n", "ends in \\", "\\x and \\d"]
    # steer apply decoded twice: "\\\\n" (a typed backslash and n) must stay a backslash and an n
    r = cli("steer", "apply", "naïve \\\\n\\n", "--artifact", artifact, "--max-new-tokens", "2", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["prompt"] == "naïve \\n\n"
