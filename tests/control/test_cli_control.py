import json
import subprocess

import pytest

pytest.importorskip("gymnasium")


@pytest.fixture
def run(capsys, tmp_path, monkeypatch):
    """``steerable control ARGS...`` in this process (a subprocess would pay the imports again per call), in a
    scratch directory so relative paths land nowhere else."""
    from steerable.cli import run as main

    monkeypatch.chdir(tmp_path)

    def go(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main(["control", *map(str, args)])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return go


def test_data_then_train_q_writes_a_critic(run, tmp_path):
    r = run("data", "--out", str(tmp_path / "d.npz"), "--episodes", "10")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["episodes"] == 10
    r = run("train-q", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "q"), "--steps", "3", "--chunk", "4")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["scores"] == "whole chunk of 4"
    assert (tmp_path / "q" / "critic.safetensors").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["data", "--out", "x.npz", "--episodes", "0"], "episodes must be >= 1"),
        (["data", "--out", "x.npz", "--env", "builtin:moon"], "unknown env"),
        (["train-q", "--data", "/no/such.npz", "--out", "q"], "no dataset at /no/such.npz"),
        (["eval", "--method", "tgpo", "--episodes", "1"], "run it with --env builtin:stlnav"),
        (["eval", "--method", "vgps", "--set", "k=3"], "vgps: no option k: use critic, eta, beta"),
        (["eval", "--method", "vgps", "--set", "beta=-1"], "vgps: beta must be >= 0"),
        (["eval", "--method", "rti", "--set", "mode=sdedit"], "mode must be one of 'direct', 'renoise'"),
        (["eval", "--method", "dsrl", "--set", "noise_policy=7"], "dsrl: noise_policy takes a path"),
        (["eval", "--method", "dsrl", "--set", "noise_policy=/no/such.zip"], "no noise policy at"),
        (["eval", "--method", "warp"], "unknown control method 'warp'"),
        (["eval", "--set", "beta"], "--set 'beta': write NAME=VALUE"),
        (["gorl", "--policy", "p", "--out", "o", "--stages", "0"], "stages must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run, args, needle):
    r = run(*args)
    assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_policy_dsrl_and_eval_end_to_end(run, tmp_path):
    d, p, s, log = tmp_path / "d.npz", tmp_path / "p", tmp_path / "s", tmp_path / "eps.jsonl"
    assert run("data", "--out", str(d), "--episodes", "6").returncode == 0
    small = ["--steps", "5", "--hidden", "16", "--layers", "1", "--steps-inference", "2"]
    r = run("train-policy", "--data", str(d), "--out", str(p), *small)
    assert r.returncode == 0, r.stderr
    tiny_sac = [
        "--env-steps",
        "40",
        "--learning-starts",
        "8",
        "--eval-every",
        "20",
        "--eval-episodes",
        "1",
        "--width",
        "16",
        "--layers",
        "1",
    ]
    r = run("dsrl", "--policy", str(p), "--out", str(s), *tiny_sac, "--batch-size", "8")
    assert r.returncode == 0, r.stderr
    curve = json.loads(r.stdout)["curve"]
    assert curve[0]["env_steps"] == 0 and curve[-1]["env_steps"] >= 20
    dsrl = ["eval", "--method", "dsrl", "--policy", str(p), "--set", f"noise_policy={s / 'sac.zip'}", "--json"]
    r = run(*dsrl, "--episodes", "2", "--plot", str(tmp_path / "map.png"), "--resume", str(log))
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["episodes"] == 2 and row["nfe_per_prediction"] == 2 and (tmp_path / "map.png").stat().st_size > 1000
    assert len(log.read_text().splitlines()) == 3  # the run's settings, then 2 episodes
    r = run(*dsrl, "--episodes", "3", "--resume", str(log))
    assert r.returncode == 0 and json.loads(r.stdout)["episodes"] == 3
    assert len(log.read_text().splitlines()) == 4  # resumed: only episode 3 ran
    r = run("eval", "--method", "rti", "--policy", str(p), "--episodes", "2", "--resume", str(log))
    assert r.returncode == 2 and "another run" in r.stderr  # never mixes another method's episodes in
    r = run("eval", "--method", "vgps", "--policy", str(p), "--set", f"critic={tmp_path / 'none'}", "--episodes", "1")
    assert r.returncode == 2 and "train-q" in r.stderr


def test_shipped_policy_and_critic_run_out_of_the_box(run):
    r = run("eval", "--method", "vgps", "--budget", "2", "--episodes", "2", "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["method"] == "vgps" and row["nfe_per_prediction"] == 20 and row["scorer_calls_per_step"] > 0
    r = run("eval", "--env", "builtin:stlnav", "--method", "tgpo", "--budget", "4", "--episodes", "2", "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)  # 4 allocations scored once per episode (8 calls over at most 200 steps)
    assert row["method"] == "tgpo" and 0.04 <= row["scorer_calls_per_step"] <= 8 / 8
