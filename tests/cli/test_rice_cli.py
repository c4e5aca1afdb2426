"""``steerable steer rice`` and ``rice-eval`` through the command line."""

import json

import pytest


@pytest.mark.slow
def test_rice_finds_two_experts_and_rice_eval_prints_a_row_per_setting(cli, tmp_path):
    r = cli("steer", "rice", "--model", "builtin:moe", "--n", "12", "--out", tmp_path / "rice", "--json")
    assert r.code == 0, r.err
    found = json.loads(r.out)
    assert len(found["experts"]) == 2 and found["markers"] > 0 and found["npmi"][0] >= found["npmi"][1]
    r = cli("steer", "rice-eval", "--model", "builtin:moe", "--artifact", found["artifact"], "--betas", "1,8",
            "--experts", "top,bottom", "--variants", "before", "--n-free", "3", "--n-hard", "3", "--n-benign", "4",
            "--json")  # fmt: skip
    assert r.code == 0, r.err
    rows = json.loads(r.out)["rows"]
    assert [(x["experts"], x["variant"], x["beta"]) for x in rows] == [
        ("top", "before", 1.0), ("top", "before", 8.0), ("bottom", "before", 1.0), ("bottom", "before", 8.0)
    ]  # fmt: skip
    keys = {"experts", "variant", "beta", "check_rate", "hard_accuracy", "benign_unchanged", "chosen"}
    assert all(keys <= set(x) for x in rows)
    assert rows[0]["benign_unchanged"] == 1.0 and rows[0]["pairs"] == found["experts"]
    assert rows[0]["check_rate"] == rows[2]["check_rate"]  # beta 1 is the unsteered model for every choice


@pytest.mark.parametrize(
    "args, needle",
    [
        (["steer", "rice", "--model", "builtin", "--out", "{d}/r"], "no mixture-of-experts router"),
        (["steer", "rice", "--model", "builtin:moe", "--corpus", "{d}/none.jsonl", "--out", "{d}/r"], "none.jsonl"),
        (["steer", "rice", "--model", "builtin:moe", "--variant", "sideways", "--out", "{d}/r"], "--variant"),
        (["steer", "rice-eval", "--experts", "top,nope"], "--experts nope: use a comma list of top, random, bottom"),
        (["steer", "rice-eval", "--betas", "-1"], "--betas"),
        (["steer", "rice-eval", "--model", "builtin", "--artifact", "{d}/x.safetensors"], "no steering artifact"),
    ],
)
def test_rice_refuses(fails, tmp_path, args, needle):
    fails(needle, *(a.format(d=tmp_path) for a in args))
