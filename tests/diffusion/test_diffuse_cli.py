import json

import pytest

pytest.importorskip("diffusers")

from steerable.cli import run  # noqa: E402
from steerable.diffusion.worlds import load_world  # noqa: E402


def test_sample_writes_a_labelled_grid_and_the_result(tmp_path, capsys):
    assert (
        run(["diffuse", "sample", "--out", str(tmp_path), "--method", "fk", "--budget", "4", "--steps", "10", "--json"])
        == 0
    )
    record = json.loads(capsys.readouterr().out)
    assert record["method"] == "fk" and record["cost"]["nfe"] == 4 * 10
    assert record["success"] == (record["judge"] == "3")
    assert (tmp_path / "samples.png").stat().st_size > 1000
    assert json.loads((tmp_path / "result.json").read_text())["reward"] == record["reward"]


def test_sample_options_and_bad_input_are_one_line_errors(tmp_path, capsys):
    assert run(["diffuse", "sample", "--out", str(tmp_path), "--target", "12"]) == 2
    assert run(["diffuse", "sample", "--out", str(tmp_path), "--method", "pf"]) == 2
    assert run(["diffuse", "sample", "--out", str(tmp_path), "--set", "potential=min"]) == 2
    assert run(["diffuse", "sample", "--out", str(tmp_path), "--set", "lam"]) == 2
    err = capsys.readouterr().err
    assert "one digit" in err and "unknown diffusion method" in err and "potential" in err and "NAME=VALUE" in err
    args = ["diffuse", "sample", "--out", str(tmp_path), "--model", "builtin:mixture", "--method", "dts"]
    assert run([*args, "--budget", "3", "--set", "widen_c=1", "--set", "widen_alpha=0.5", "--steps", "10"]) == 0


def test_scale_runs_on_the_shared_runner_and_resumes(tmp_path, capsys):
    args = ["diffuse", "scale", "--out", str(tmp_path), "--methods", "bon,fk", "--budgets", "2", "--limit", "2"]
    assert run([*args, "--steps", "10", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [(r["method"], r["budget"], r["nfe"]) for r in summary["rows"]] == [("bon", 2, 20.0), ("fk", 2, 20.0)]
    assert (tmp_path / "accuracy_vs_nfe.png").exists()
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all("correct" in json.loads(x) for x in lines)
    assert run([*args, "--steps", "10", "--json"]) == 0  # resumed: nothing redone
    assert (tmp_path / "results.jsonl").read_text().splitlines() == lines


@pytest.mark.slow
def test_scale_on_the_mixture_reports_distance_to_the_target(tmp_path, capsys):
    args = ["diffuse", "scale", "--task", "builtin:mixture", "--out", str(tmp_path), "--methods", "fk-sample"]
    assert run([*args, "--budgets", "2", "--limit", "4", "--steps", "10", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert "mmd2" in row and 0 <= row["mode_tv"] <= 1 and "accuracy" not in row
    assert run([*args, "--budgets", "2,2", "--limit", "4"]) == 2


def test_train_diffusion_writes_a_loadable_world(tmp_path):
    out = tmp_path / "m"
    assert run(["builtin", "train-diffusion", "--out", str(out), "--world", "mixture", "--steps", "30"]) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == 30 and "--steps 30" in record["command"] and "--minutes" not in record["command"]
    world = load_world("builtin:mixture", str(out))
    assert world.denoiser.config.sample_shape in ((2,), [2])


def test_train_diffusion_stopped_by_ctrl_c_resumes_to_the_same_weights(tmp_path, monkeypatch, capsys):
    import signal

    from steerable.diffusion.denoiser import MLPDenoiser

    def train(out):
        return run(["builtin", "train-diffusion", "--out", str(out), "--world", "mixture", "--steps", "6",
                    "--batch-size", "32"])  # fmt: skip

    assert train(tmp_path / "a") == 0
    forward, calls = MLPDenoiser.forward, []

    def counted(self, *a, **kw):
        calls.append(1)
        if len(calls) == 3 and interrupt:
            signal.raise_signal(signal.SIGINT)  # during step 3: the loop ends the step, saves, stops
        return forward(self, *a, **kw)

    monkeypatch.setattr(MLPDenoiser, "forward", counted)
    interrupt = True
    assert train(tmp_path / "b") == 2
    assert "interrupted at step 3" in capsys.readouterr().err and (tmp_path / "b" / "checkpoint.pt").exists()
    calls.clear()
    interrupt = False
    assert train(tmp_path / "b") == 0
    assert "resuming at step 3" in capsys.readouterr().err and len(calls) == 3  # steps 4 to 6 only
    weights = "diffusion_pytorch_model.safetensors"
    assert (tmp_path / "a" / weights).read_bytes() == (tmp_path / "b" / weights).read_bytes()
    assert json.loads((tmp_path / "b" / "training.json").read_text())["steps"] == 6
