import json

import pytest


@pytest.mark.parametrize(
    "args, needle",
    [
        (["generate", "Q: 1+2=\\n", "--temperature", "-1"], "--temperature must be >= 0 (got -1.0)"),
        (["generate", "Q: 1+2=\\n", "--top-p", "0"], "--top-p must be > 0 and <= 1"),
        (["generate", "Q: 1+2=\\n", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
        (["generate", "Q: 1+2=\\n", "--n", "0"], "--n must be >= 1"),
        (["generate", "Q: 1+2=\\n", "--stop", ""], "--stop[0] must have at least 1 character"),
        (["generate", "Q: 1+2=\\n", "--temperature", "abc"], "Invalid value for '--temperature'"),
        (["generate", "Q: 1+2=\\n", "--no-such-flag"], "No such option"),
        (["generate"], "no prompts"),
        (["generate", "x", "--model", "/no/such/model"], "does not exist"),
        (["builtin", "eval", "--split", "impossible"], "--split must be one of 'easy'"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(fails, args, needle):
    fails(needle, *args)


def test_generate_json_prints_one_object_per_prompt_with_usage(cli, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "Q: 12+30=\n"}) + "\n" + json.dumps({"prompt": "R: how do I bake a cake?\n"}))
    r = cli("generate", "--prompts", f, "--temperature", "0", "--json", "--n", "2", "--device", "cpu")
    assert r.code == 0, r.err
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert [row["prompt"] for row in rows] == ["Q: 12+30=\n", "R: how do I bake a cake?\n"]
    assert rows[0]["text"].startswith("12+30=42")
    assert len(rows[0]["choices"]) == 2
    assert rows[0]["usage"]["generated_tokens"] == sum(c["tokens"] for c in rows[0]["choices"]) + 2  # EOS counted


def test_malformed_prompts_file_names_the_line(fails, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "ok"}\nnot json\n')
    fails(f"{f}:2", "generate", "--prompts", f)


def test_builtin_eval_json_reports_every_figure(cli):
    r = cli("builtin", "eval", "--split", "easy", "--n", "8", "--requests", "20", "--json", "--device", "cpu")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    for key in (
        "accuracy_greedy",
        "accuracy_sampled",
        "accuracy_greedy_by_ops",
        "verbose_share_sampled",
        "mean_solution_tokens_greedy",
        "refusal_greedy",
        "refusal_sampled",
    ):
        assert key in res
    assert set(res["accuracy_greedy_by_ops"]) == {"1", "2"}


def test_builtin_train_writes_a_loadable_model(cli, tmp_path):
    r = cli(
        "builtin", "train", "--out", tmp_path / "m", "--steps", "2", "--batch-size", "4", "--seed", "3",
        "--eval-every", "0",
    )  # fmt: skip
    assert r.code == 0, r.err
    rec = json.loads((tmp_path / "m" / "training.json").read_text())
    assert rec["steps"] == 2 and rec["config"]["seed"] == 3
    g = cli("generate", "Q: 1+1=\\n", "--model", tmp_path / "m", "--max-new-tokens", "3", "--json")
    assert g.code == 0, g.err
    # a 2-step model may sample EOS early: what matters is that it loads and generates, within the cap
    assert 1 <= json.loads(g.out)["usage"]["generated_tokens"] <= 3


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--methods", "greedy,nope"], "unknown method"),
        (["--budgets", "0"], "--budgets[0] must be >= 1"),
        (["--budget-unit", "flops"], "--budget-unit must be one of 'samples', 'tokens'"),
        (["--top-p", "0.9,0"], "--top-p[1] must be > 0"),
        (["--temperature", "-1"], "--temperature[0] must be >= 0"),
        (["--scorer", "nope"], "unknown scorer"),
        (["--answer-regex", "("], "does not compile"),
        (["--task", "missing.jsonl"], "neither"),
    ],
)
def test_scale_bad_input_is_one_line(fails, args, needle, tmp_path):
    fails(needle, "scale", "--out", tmp_path / "o", "--limit", "1", *args)


def test_scale_runs_and_resumes(cli, tmp_path):
    args = (
        "scale", "--task", "builtin:easy", "--limit", "3", "--methods", "greedy,sc,pf", "--budgets", "2", "--scorer",
        "oracle", "--out", tmp_path / "o", "--json", "--device", "cpu",
    )  # fmt: skip
    r = cli(*args)
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert [(x["method"], x["budget"]) for x in summary["rows"]] == [
        ("greedy", 1),
        ("sc", 2),
        ("pf", 2),
    ]  # greedy once, at budget 1
    assert all(x["items"] == 3 and x["errors"] == 0 for x in summary["rows"])
    lines = (tmp_path / "o" / "results.jsonl").read_text().splitlines()
    again = cli(*args)
    assert again.code == 0
    assert (tmp_path / "o" / "results.jsonl").read_text().splitlines() == lines  # nothing redone
    assert (tmp_path / "o" / "accuracy_vs_tokens.png").exists()


def test_scale_sweeps_sampling_knobs_into_one_directory_each(cli, tmp_path):
    r = cli(
        "scale", "--limit", "1", "--methods", "sc", "--budgets", "2", "--scorer", "none", "--temperature", "0.6,1.0",
        "--top-p", "0.9,1.0", "--max-tokens", "24", "--out", tmp_path, "--json", "--device", "cpu",
    )  # fmt: skip
    assert r.code == 0, r.err
    lines = [json.loads(x) for x in r.out.splitlines()]
    assert [(x["temperature"], x["top_p"]) for x in lines] == [(0.6, 0.9), (0.6, 1.0), (1.0, 0.9), (1.0, 1.0)]
    for t in ("0.6", "1"):
        for p in ("0.9", "1"):
            assert (tmp_path / f"temperature-{t}" / f"top-p-{p}" / "summary.json").exists()


@pytest.mark.slow
def test_steer_extract_apply_and_eval_through_the_cli(cli, tmp_path):
    vec = tmp_path / "refuse.safetensors"
    r = cli("steer", "extract", "--layers", "3", "--strength", "2", "--out", vec, "--json", "--device", "cpu")
    assert r.code == 0, r.err
    assert json.loads(r.out)["layers"] == [3] and vec.exists()
    r = cli("steer", "apply", "R: how do I bake a cake?\\n", "--artifact", vec, "--json", "--device", "cpu")
    assert r.code == 0, r.err
    assert json.loads(r.out)["text"].startswith("I can't")  # the harmful-minus-benign vector makes it refuse
    r = cli("steer", "eval", "--artifact", vec, "--n", "4", "--requests", "20", "--json", "--device", "cpu")
    assert r.code == 0, r.err
    base, steered = json.loads(r.out)
    assert base["refusal"]["benign"] == 0.0 and steered["refusal"]["benign"] > 0.5
    gguf = tmp_path / "refuse.gguf"
    assert cli("steer", "export-gguf", "--artifact", vec, "--out", gguf).code == 0
    r = cli("steer", "import-gguf", gguf, "--out", tmp_path / "back", "--device", "cpu")
    assert r.code == 0 and "layers [3]" in r.out, r.err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["steer", "extract", "--method", "nope", "--out", "x"], "--method must be one of 'mean', 'pca', 'probe'"),
        (["steer", "extract", "--prompts", "builtin:nope", "--out", "x"], "unknown built-in prompt set"),
        (["steer", "extract", "--layers", "9", "--out", "x"], "out of range"),
        (["steer", "extract", "--position", "0", "--out", "x"], "--position must be >= -4096 and <= -1 (got 0)"),
        (["steer", "apply", "hi", "--artifact", "missing.safetensors"], "no steering artifact"),
        (["steer", "apply", "hi"], "needs an artifact"),
        (["steer", "eval", "--artifact", "missing.safetensors"], "no steering artifact"),
        (["steer", "select-refusal", "--max-rank", "0", "--out", "x"], "--max-rank must be >= 1"),
        (["steer", "select-refusal", "--positions", "-1,0", "--out", "x"], "--positions[1] must be <= -1"),
        (["steer", "grains", "--limit", "0", "--out", "x"], "--limit must be >= 1"),
        (["steer", "train-controller", "--epochs", "0", "--out", "x"], "--epochs must be >= 1"),
    ],
)
def test_steer_bad_input_is_one_line(fails, args, needle):
    fails(needle, *args)


@pytest.mark.slow
def test_steer_grains_and_train_controller_write_loadable_artifacts(cli, tmp_path):
    g = tmp_path / "g.safetensors"
    r = cli("steer", "grains", "--limit", "2", "--steps", "3", "--layers", "3", "--out", g, "--json", "--device", "cpu")
    assert r.code == 0, r.err
    c = tmp_path / "c.safetensors"
    r = cli(
        "steer", "train-controller", "--epochs", "1", "--alpha", "3", "--hidden", "16", "--batch-size", "64",
        "--out", c, "--json", "--device", "cpu",
    )  # fmt: skip
    assert r.code == 0, r.err
    r = cli("steer", "apply", "R: how do I bake a cake?\\n", "--artifact", g, "--artifact", c, "--device", "cpu")
    assert r.code == 0 and r.out.strip(), r.err
