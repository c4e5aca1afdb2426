"""Issue 12 section 5: `train rl` resumed after a kill keeps each step's metrics once and says what it resumed."""

import json
import shutil

import pytest
from safetensors.torch import load_file

pytest.importorskip("trl")

from steerable.rl.run import RLRunConfig, train_rl  # noqa: E402

pytestmark = [pytest.mark.usefixtures("rl_rows_once"), pytest.mark.slow]  # TRL training steps


def _cfg(out, model, **kw):
    base = dict(out=str(out), model=model, task="builtin:easy", steps=1, minutes=None, prompts_per_step=2, group=2,
                max_completion=8, eval_every=0, eval_n=4, save_every=1, device="cpu")  # fmt: skip
    return RLRunConfig(**{**base, **kw})


def _steps(out):
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


def test_a_resumed_run_drops_the_killed_runs_rows_past_its_checkpoint(tmp_path, tiny_dir, capsys):
    train_rl(_cfg(tmp_path, tiny_dir, steps=2), progress=False)
    metrics = tmp_path / "metrics.jsonl"
    lines = [x for x in metrics.read_text().splitlines() if '"final"' not in x]
    # killed during step 4: steps 3 and 4 were logged (no checkpoint for them) and a line was cut
    metrics.write_text("\n".join(lines + [json.dumps({"step": 3, "loss": 0.1}), json.dumps({"step": 4})]) + '\n{"st')
    capsys.readouterr()
    summary = train_rl(_cfg(tmp_path, tiny_dir, steps=4), progress=False)
    assert "resuming from checkpoint-2 (step 2" in capsys.readouterr().err
    assert summary["resumed"]["step"] == 2 and summary["resumed"]["dropped_rows"] == 3
    steps = _steps(tmp_path)
    assert [s for s in steps if s in (1, 2, 3, 4)] == [1, 2, 3, 4, 4]  # each step once, then the final row
    assert summary["steps"] == 4


def test_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path, tiny_dir, capsys):
    train_rl(_cfg(tmp_path, tiny_dir, steps=1), progress=False)
    shutil.rmtree(tmp_path / "checkpoints")  # as if killed after logging step 1, before any checkpoint
    (tmp_path / "elapsed.json").unlink()
    train_rl(_cfg(tmp_path, tiny_dir, steps=1), progress=False)
    assert "no checkpoint to resume from; starting over" in capsys.readouterr().err
    assert _steps(tmp_path) == [0, 1, 1]  # base, step 1, final: once each


def test_rerunning_a_spent_budget_keeps_the_trained_model(tmp_path, tiny_dir, char_tokenizer, monkeypatch):
    from conftest import graded_prm

    graded = graded_prm(char_tokenizer)  # distinct rewards: the step moves the weights
    monkeypatch.setattr("steerable.rl.run.builtin_prm", lambda: graded)
    cfg = _cfg(tmp_path, tiny_dir, steps=None, minutes=0.0001, lr=1e-2, reward="prm")  # a step that moves weights
    first = train_rl(cfg, progress=False)
    assert first["steps"] == 1
    again = train_rl(cfg, progress=False)
    assert again["steps"] == 1 and again["resumed"]["checkpoint"] == "checkpoint-1"
    saved = load_file(str(tmp_path / "model.safetensors"))
    trained = load_file(str(tmp_path / "checkpoints" / "checkpoint-1" / "model.safetensors"))
    base = load_file(str(next(p for p in __import__("pathlib").Path(tiny_dir).glob("*.safetensors"))))
    name = next(k for k in trained if k.endswith("q_proj.weight"))
    assert saved[name].equal(trained[name]) and not saved[name].equal(base[name])  # not the base model written back
