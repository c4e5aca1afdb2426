import json
import subprocess
import sys

import pytest

pytest.importorskip("gymnasium")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from steerable.cli import main; main()", "control", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_data_then_train_q_writes_a_critic(tmp_path):
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
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle):
    r = run(*args)
    assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1, r.stderr
