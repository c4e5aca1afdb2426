"""The one training loop: budgets, schedules, and checkpoints that resume to the uninterrupted run's weights."""

import math
import signal

import pytest
import torch

from steerable.errors import ConfigError, SteerableError
from steerable.training import CHECKPOINT, Budget, cosine, train_loop, warmup_cosine


def setup(seed: int = 0):
    """A small regression: a model, its optimiser, its batch generator and a loss that draws from it."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    calls = []

    def loss() -> torch.Tensor:
        calls.append(1)
        x = torch.randn(16, 3, generator=g)
        noise = torch.randn(16, 1) * 0.01  # torch's global stream: a checkpoint keeps it too
        return ((model(x) - x.sum(1, keepdim=True) - noise) ** 2).mean()

    return model, opt, g, loss, calls


def run(tmp_path, steps=20, settings=None, log_every=5, **kw):
    model, opt, g, loss, calls = setup()
    for name, fn in kw.pop("patch", {}).items():
        loss = fn(loss, calls) if name == "loss" else loss
    r = train_loop(
        model, opt, loss, lambda step, spent: cosine(spent, 1e-2), Budget(1.0, steps), label="test", data=g,
        checkpoint=tmp_path / CHECKPOINT, settings=settings or {"lr": 0.01, "out": str(tmp_path)}, log_every=log_every,
        progress=False, **kw,
    )  # fmt: skip
    model.calls = len(calls)  # loss evaluations in this session
    return model, r


def interrupt_at(step: int, times: int = 1):
    def wrap(loss, calls):
        def interrupted() -> torch.Tensor:
            if len(calls) == step - 1:  # during step `step`: the loop finishes it, then stops
                for _ in range(times):
                    signal.raise_signal(signal.SIGINT)
            return loss()

        return interrupted

    return wrap


def test_an_interrupted_steps_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, capsys):
    straight, full = run(tmp_path / "a")
    with pytest.raises(SteerableError, match="interrupted at step 7: saved .*checkpoint.pt; rerun"):
        run(tmp_path / "b", patch={"loss": interrupt_at(7)})
    assert (tmp_path / "b" / CHECKPOINT).exists()
    resumed, r = run(tmp_path / "b")
    assert "resuming at step 7" in capsys.readouterr().err
    assert r.resumed_at == 7 and r.step == full.step == 20 and resumed.calls == 13  # not started over
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert r.loss == full.loss and [h["loss_ema"] for h in r.history] == [h["loss_ema"] for h in full.history]
    assert not (tmp_path / "b" / CHECKPOINT).exists()  # the finished run leaves no checkpoint behind
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the loop's handler is gone


def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, patch={"loss": interrupt_at(3, times=2)})
    assert not (tmp_path / CHECKPOINT).exists()


def test_a_checkpoint_of_other_settings_is_refused_but_a_moved_directory_resumes(tmp_path):
    with pytest.raises(SteerableError):
        run(tmp_path, patch={"loss": interrupt_at(4)})
    with pytest.raises(ConfigError, match=r"checkpoint of other settings \(lr 0.01, now 0.02\): rerun with its"):
        run(tmp_path, settings={"lr": 0.02, "out": str(tmp_path)})
    _, r = run(tmp_path, settings={"lr": 0.01, "out": "elsewhere", "threads": 4})
    assert r.resumed_at == 4


def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path):
    (tmp_path / CHECKPOINT).write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="is not a checkpoint this loop wrote: delete it to start over"):
        run(tmp_path)


def test_log_rows_and_an_early_stop(tmp_path):
    _, r = run(tmp_path, log=lambda run: {"step": run.step, "big": run.step >= 10}, stop=lambda row: row["big"])
    assert r.stopped_early and r.step == 10 and [h["step"] for h in r.history] == [5, 10]


def test_a_time_budget_stops_and_none_spent_is_an_error(tmp_path):
    model, opt, g, loss, _ = setup()
    r = train_loop(model, opt, loss, lambda s, f: 1e-3, Budget(0.002), label="t", progress=False)
    assert r.step >= 1 and r.seconds >= 0.12
    with pytest.raises(ConfigError, match="no training step fitted in the time given"):
        train_loop(model, opt, loss, lambda s, f: 1e-3, Budget(1e-12), label="t", progress=False)


def test_the_schedules():
    assert cosine(0.0, 2.0) == 2.0 and cosine(1.0, 2.0) == pytest.approx(0.02) and cosine(0.5, 2.0) == 1.01
    # the formula the denoisers and policies were trained with, to the bit
    assert all(cosine(f, 1e-3) == 1e-3 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * f))) for f in (0.1, 0.37, 0.9))
    assert warmup_cosine(0, 0.0, 1.0, 0.1, 10) == 0.1 and warmup_cosine(9, 0.01, 1.0, 0.1, 10) < 1.0
    assert warmup_cosine(50, 1.0, 1.0, 0.1, 10) == pytest.approx(0.1)
