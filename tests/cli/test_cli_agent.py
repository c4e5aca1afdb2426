import json

import pytest


def test_agent_scale_prints_rows_with_success_and_cost_and_resumes(cli, tmp_path):
    args = ("agent", "scale", "--env", "builtin:lookup", "--split", "easy", "--limit", "2", "--methods", "greedy,bon",
            "--budgets", "2", "--device", "cpu", "--out", tmp_path, "--json")  # fmt: skip
    r = cli(*args)
    assert r.code == 0, r.err
    rows = json.loads(r.out)["rows"]
    assert [(x["method"], x["budget"], x["items"]) for x in rows] == [("greedy", 1, 2), ("bon", 2, 2)]
    for key in ("success", "success_se", "generated_tokens", "env_steps", "real_steps", "tool_calls", "seconds"):
        assert key in rows[0]
    assert rows[1]["env_steps"] >= rows[1]["real_steps"]
    assert json.loads(cli(*args).out) == {"rows": rows}  # every row read back, nothing rerun
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 4


def test_agent_run_prints_a_transcript_and_its_verdict(cli, tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"env": "calculator", "expression": "12+30*45"}\n')
    r = cli("agent", "run", "--task", f, "--device", "cpu", "--json")
    assert r.code == 0, r.err
    (row,) = json.loads(r.out)["rows"]
    assert row["transcript"].startswith("[calc] Q: 12+30*45=\n") and isinstance(row["success"], bool)


@pytest.mark.parametrize(
    ("needle", "args"),
    [
        ("unknown agent method 'nope'", ("agent", "scale", "--methods", "nope")),
        ("no text-only form", ("agent", "scale", "--env", "builtin:maze", "--tools", "off", "--limit", "1")),
        ("--budgets", ("agent", "scale", "--budgets", "0")),
        ("lists 4 twice", ("agent", "scale", "--budgets", "4,4")),
        ("unknown value function", ("agent", "scale", "--value", "psychic", "--limit", "1", "--device", "cpu")),
        ("branching", ("agent", "scale", "--methods", "tree:branching=0")),
    ],
)
def test_agent_commands_fail_in_one_line(fails, needle, args):
    fails(needle, *args)


def test_a_bad_task_file_names_its_line(fails, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"env": "calculator", "expression": "2+3"}\n{"env": "lookup", "start": "k9", "table": {"k1": "5"}}\n')
    fails("bad.jsonl:2: task field 'start'", "agent", "scale", "--task", f)
