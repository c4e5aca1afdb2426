import json
import subprocess
import sys

import pytest


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from steerable.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "args, needle",
    [
        (["generate", "Q: 1+2=\\n", "--temperature", "-1"], "temperature"),
        (["generate", "Q: 1+2=\\n", "--top-p", "0"], "top_p"),
        (["generate", "Q: 1+2=\\n", "--max-new-tokens", "0"], "max_new_tokens"),
        (["generate", "Q: 1+2=\\n", "--n", "0"], "n must be"),
        (["generate", "Q: 1+2=\\n", "--stop", ""], "stop strings"),
        (["generate"], "no prompts"),
        (["generate", "x", "--model", "/no/such/model"], "does not exist"),
        (["builtin", "eval", "--split", "impossible"], "unknown split"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(args, needle):
    r = run(*args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_generate_json_prints_one_object_per_prompt_with_usage(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "Q: 12+30=\n"}) + "\n" + json.dumps({"prompt": "R: how do I bake a cake?\n"}))
    r = run("generate", "--prompts", str(f), "--temperature", "0", "--json", "--n", "2", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["prompt"] for row in rows] == ["Q: 12+30=\n", "R: how do I bake a cake?\n"]
    assert rows[0]["text"].startswith("12+30=42")
    assert len(rows[0]["choices"]) == 2
    assert rows[0]["usage"]["generated_tokens"] == sum(c["tokens"] for c in rows[0]["choices"]) + 2  # EOS counted


def test_malformed_prompts_file_names_the_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "ok"}\nnot json\n')
    r = run("generate", "--prompts", str(f))
    assert r.returncode == 2 and f"{f}:2" in r.stderr


def test_builtin_eval_json_reports_every_figure():
    r = run("builtin", "eval", "--split", "easy", "--n", "8", "--requests", "20", "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
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


def test_builtin_train_writes_a_loadable_model(tmp_path):
    r = run(
        "builtin",
        "train",
        "--out",
        str(tmp_path / "m"),
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--seed",
        "3",
        "--eval-every",
        "0",
    )
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "m" / "training.json").read_text())
    assert rec["steps"] == 2 and rec["config"]["seed"] == 3
    g = run("generate", "Q: 1+1=\\n", "--model", str(tmp_path / "m"), "--max-new-tokens", "3", "--json")
    assert g.returncode == 0, g.stderr
    # a 2-step model may sample EOS early: what matters is that it loads and generates, within the cap
    assert 1 <= json.loads(g.stdout)["usage"]["generated_tokens"] <= 3


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--methods", "greedy,nope"], "unknown method"),
        (["--budgets", "0"], "budgets"),
        (["--budget-unit", "flops"], "budget-unit"),
        (["--top-p", "0.9,0"], "top_p"),
        (["--temperature", "-1"], "temperature"),
        (["--scorer", "nope"], "unknown scorer"),
        (["--answer-regex", "("], "does not compile"),
        (["--task", "missing.jsonl"], "neither"),
    ],
)
def test_scale_bad_input_is_one_line(args, needle, tmp_path):
    r = run("scale", "--out", str(tmp_path / "o"), "--limit", "1", *args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_scale_runs_and_resumes(tmp_path):
    args = (
        "scale",
        "--task",
        "builtin:easy",
        "--limit",
        "3",
        "--methods",
        "greedy,sc,pf",
        "--budgets",
        "2",
        "--scorer",
        "oracle",
        "--out",
        str(tmp_path / "o"),
        "--json",
        "--device",
        "cpu",
    )
    r = run(*args)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert [(x["method"], x["budget"]) for x in summary["rows"]] == [("greedy", 2), ("sc", 2), ("pf", 2)]
    assert all(x["items"] == 3 and x["errors"] == 0 for x in summary["rows"])
    lines = (tmp_path / "o" / "results.jsonl").read_text().splitlines()
    again = run(*args)
    assert again.returncode == 0
    assert (tmp_path / "o" / "results.jsonl").read_text().splitlines() == lines  # nothing redone
    assert (tmp_path / "o" / "accuracy_vs_tokens.png").exists()


def test_scale_sweeps_sampling_knobs_into_one_directory_each(tmp_path):
    r = run(
        "scale", "--limit", "1", "--methods", "sc", "--budgets", "2", "--scorer", "none", "--temperature", "0.6,1.0",
        "--top-p", "0.9,1.0", "--out", str(tmp_path), "--json", "--device", "cpu",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["temperature"], x["top_p"]) for x in lines] == [(0.6, 0.9), (0.6, 1.0), (1.0, 0.9), (1.0, 1.0)]
    for t in ("0.6", "1"):
        for p in ("0.9", "1"):
            assert (tmp_path / f"temperature-{t}" / f"top-p-{p}" / "summary.json").exists()


def test_steer_extract_apply_and_eval_through_the_cli(tmp_path):
    vec = tmp_path / "refuse.safetensors"
    r = run("steer", "extract", "--layers", "3", "--strength", "2", "--out", str(vec), "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["layers"] == [3] and vec.exists()
    r = run("steer", "apply", "R: how do I bake a cake?\\n", "--artifact", str(vec), "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["text"].startswith("I can't")  # the harmful-minus-benign vector makes it refuse
    r = run("steer", "eval", "--artifact", str(vec), "--n", "4", "--requests", "91", "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    base, steered = json.loads(r.stdout)
    assert base["refusal"]["benign"] == 0.0 and steered["refusal"]["benign"] > 0.5
    gguf = tmp_path / "refuse.gguf"
    assert run("steer", "export-gguf", "--artifact", str(vec), "--out", str(gguf)).returncode == 0
    r = run("steer", "import-gguf", str(gguf), "--out", str(tmp_path / "back"), "--device", "cpu")
    assert r.returncode == 0 and "layers [3]" in r.stdout, r.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["steer", "extract", "--method", "nope", "--out", "x"], "unknown method"),
        (["steer", "extract", "--prompts", "builtin:nope", "--out", "x"], "unknown built-in prompt set"),
        (["steer", "extract", "--layers", "9", "--out", "x"], "out of range"),
        (["steer", "extract", "--position", "0", "--out", "x"], "negative"),
        (["steer", "apply", "hi", "--artifact", "missing.safetensors"], "no steering artifact"),
        (["steer", "eval", "--artifact", "missing.safetensors"], "no steering artifact"),
        (["steer", "select-refusal", "--max-rank", "0", "--out", "x"], "max-rank"),
        (["steer", "grains", "--limit", "0", "--out", "x"], "--limit"),
        (["steer", "train-controller", "--epochs", "0", "--out", "x"], "--epochs"),
    ],
)
def test_steer_bad_input_is_one_line(args, needle, tmp_path):
    r = run(*args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_steer_grains_and_train_controller_write_loadable_artifacts(tmp_path):
    g = tmp_path / "g.safetensors"
    r = run(
        "steer", "grains", "--limit", "2", "--steps", "3", "--layers", "3", "--out", str(g), "--json", "--device", "cpu"
    )
    assert r.returncode == 0, r.stderr
    c = tmp_path / "c.safetensors"
    r = run("steer", "train-controller", "--epochs", "1", "--alpha", "3", "--out", str(c), "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    r = run(
        "steer", "apply", "R: how do I bake a cake?\\n", "--artifact", str(g), "--artifact", str(c), "--device", "cpu"
    )
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
