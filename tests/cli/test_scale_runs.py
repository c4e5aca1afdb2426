"""Issue 12 section 5 through the command line: settings recorded, resumes checked, honest counts and output."""

import json
import shutil

import pytest

BASE = ("scale", "--task", "builtin:easy", "--methods", "greedy,sc", "--budgets", "2", "--scorer", "oracle",
        "--max-tokens", "40", "--device", "cpu")  # fmt: skip


@pytest.fixture(scope="module")
def _first_run_once(tmp_path_factory):
    from steerable.cli import run as main

    out = tmp_path_factory.mktemp("first")
    assert main([*BASE, "--limit", "3", "--out", str(out), "--json"]) == 0
    return out


@pytest.fixture
def first_run(_first_run_once, tmp_path):
    """A finished 3-item run, run once for the module; each test gets its own copy to resume or refuse."""
    shutil.copytree(_first_run_once, tmp_path, dirs_exist_ok=True)
    return tmp_path


@pytest.mark.parametrize(
    "change, needle",
    [
        (["--temperature", "1.5"], "holds a run with --temperature 0.8, this one has 1.5"),
        (["--seed", "7"], "--seed 0, this one has 7"),
        (["--max-tokens", "8"], "--max-tokens 40, this one has 8"),
        (["--task", "builtin:medium"], "--task 'builtin:easy', this one has 'builtin:medium'"),
        (["--scorer", "builtin-prm"], "--scorer 'oracle', this one has 'builtin-prm'"),
        (["--delimiter", "\\n\\n"], "--delimiter 'auto', this one has '\\\\n\\\\n'"),
        (["--budget-unit", "tokens", "--budgets", "64"], "--budget-unit 'samples', this one has 'tokens'"),
    ],
)
def test_resuming_with_other_settings_is_one_line_naming_the_setting(fails, first_run, change, needle):
    args = list(BASE) + ["--limit", "3", "--out", first_run]
    for i in range(0, len(change), 2):  # replace a flag's value, or add it
        if change[i] in args:
            args[args.index(change[i]) + 1] = change[i + 1]
        else:
            args += change[i : i + 2]
    fails(needle, *args)


def test_a_changed_task_file_is_refused(fails, cli, tmp_path):
    task = tmp_path / "t.jsonl"
    task.write_text('{"prompt": "Q: 1+1=\\n", "answer": 2}\n')
    args = ("scale", "--task", task, "--methods", "sc", "--budgets", "2", "--scorer", "oracle", "--out", tmp_path / "o")
    assert cli(*args, "--json").code == 0
    task.write_text('{"prompt": "Q: 1+1=\\n", "answer": 3}\n')  # same spec, other content
    fails("holds a run with the content of --task", *args)


def test_summary_carries_settings_and_counts_only_this_runs_items(cli, first_run):
    r = cli(*BASE, "--limit", "2", "--out", first_run, "--json")
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert summary["items"] == 2 and all(x["items"] == 2 for x in summary["rows"])
    assert [(x["method"], x["budget"]) for x in summary["rows"]] == [("greedy", 1), ("sc", 2)]
    s = summary["settings"]
    assert s["task"] == "builtin:easy" and s["scorer"] == "oracle" and s["temperature"] == 0.8
    assert s["max_tokens"] == 40 and s["budget_unit"] == "samples" and len(s["model_sha256"]) == 16
    assert json.loads((first_run / "summary.json").read_text())["settings"] == s


def test_off_a_terminal_the_table_keeps_every_digit_and_progress_lines_are_printed(cli, first_run, monkeypatch):
    import steerable.cli.scale as scale_cmd

    monkeypatch.setattr(scale_cmd, "REPORT_EVERY", 0.2)
    r = cli(*BASE, "--limit", "4", "--budgets", "2,3", "--out", first_run)
    assert r.code == 0, r.err
    assert "…" not in r.out and "accuracy" in r.out and "gen tok" in r.out
    assert "builtin:easy, 4 items, scorer oracle" in r.out
    progress = [x for x in r.err.splitlines() if x.startswith(f"scale {first_run}:")]
    assert progress and "/12 done" in progress[-1] and "ETA" in progress[-1], r.err
