"""One training loop for the built-in models: a budget of minutes or steps, a cosine schedule, checkpoints, resume.

The built-in language model (:mod:`steerable.tasks.builtin.train`), the
diffusion worlds' denoisers (:mod:`steerable.diffusion.train`) and the control
policies (:mod:`steerable.control.training.bc`) each build a model, an
optimiser and a ``loss()`` that draws a batch, then call :func:`train_loop`,
which reads like nanoGPT's: the share of the budget spent sets the learning
rate, one optimiser step, the loss's moving average, a log row now and then.

- Budget: ``steps`` is exact (the same seed makes the same weights, bit for
  bit, on the same machine and torch); otherwise the schedule spans
  ``minutes`` of wall time and the steps that fit depend on the machine.
- Checkpoints: given a path, the loop writes the weights, the optimiser, the
  random states and the run so far there every minute, and when interrupted
  (Ctrl-C or SIGTERM, after the step under way). Rerunning the same settings
  resumes from it, and a resumed ``steps`` run ends with the weights of an
  uninterrupted one. The checkpoint goes when the loop ends.
- Progress: a bar on a terminal; off one (nohup, a pipe, CI) a line a minute
  on stderr. Log rows go to stderr either way.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steerable.errors import ConfigError, SteerableError

#: the checkpoint's file name in a run's output directory
CHECKPOINT = "checkpoint.pt"
#: seconds between checkpoints: a kill loses at most this much work
CHECKPOINT_SECONDS = 60.0
#: settings a resumed run may change: where its directory lives, how many cores it has
MAY_DIFFER = ("out", "threads")


@dataclass(frozen=True)
class Budget:
    """``steps`` (exact, reproducible) or else ``minutes`` of wall time: the schedule spans whichever rules."""

    minutes: float
    steps: int | None = None

    def spent(self, step: int, seconds: float) -> float:
        """The share of the budget spent after ``step`` steps and ``seconds``: 0 at the start, 1 at the end."""
        return step / self.steps if self.steps else seconds / (self.minutes * 60)


@dataclass
class Run:
    """Where a run is: log rows read it, the trainer's record is made of it."""

    step: int = 0
    seconds: float = 0.0  # wall time in the loop, earlier sessions of a resumed run included
    loss: float | None = None  # moving average of the training loss
    history: list[dict] = field(default_factory=list)  # the log rows
    stopped_early: bool = False
    resumed_at: int | None = None  # the step a checkpoint brought this run to


def cosine(spent: float, peak: float, floor: float = 0.01) -> float:
    """From ``peak`` at the start down a half cosine to ``floor * peak`` when the budget is spent."""
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * spent)))


def warmup_cosine(step: int, spent: float, peak: float, end: float, warmup: int) -> float:
    """nanoGPT's: a linear warm-up over the first ``warmup`` steps, capped by a cosine from ``peak`` to ``end``."""
    return min(peak * min(1.0, (step + 1) / warmup), end + 0.5 * (peak - end) * (1 + math.cos(math.pi * spent)))


def train_loop(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    loss: Callable[[], torch.Tensor],
    lr: Callable[[int, float], float],
    budget: Budget,
    *,
    label: str,
    data: Any = None,
    checkpoint: Path | None = None,
    settings: Mapping[str, Any] | None = None,
    average: float = 0.01,
    clip: float | None = None,
    log_every: int = 0,
    log: Callable[[Run], dict] | None = None,
    stop: Callable[[dict], bool] | None = None,
    progress: bool = True,
) -> Run:
    """Train ``model`` with ``opt`` on ``loss()`` until ``budget`` is spent (or ``stop`` says so); the run.

    ``lr(step, spent)`` is a step's learning rate (:func:`cosine`,
    :func:`warmup_cosine`). ``data`` draws the batches (a ``torch.Generator``
    or anything with ``state_dict``/``load_state_dict``): a checkpoint keeps
    its state beside torch's global one. ``settings`` (the config as a dict)
    go in the checkpoint, and a checkpoint of other settings is refused.
    ``average`` is a step's weight in the loss's moving average, ``clip``
    bounds the gradients' norm. Every ``log_every`` steps ``log(run)`` makes a
    row of ``run.history`` (by default: step, seconds, loss_ema), and
    ``stop(row)`` true ends the run there.
    """
    run = _resume(checkpoint, model, opt, data, settings) if checkpoint is not None else Run()
    start = time.perf_counter() - run.seconds
    saved = time.perf_counter()
    with _Shown(label, budget, progress) as shown, _interrupts(checkpoint is not None) as interrupted:
        while (spent := budget.spent(run.step, time.perf_counter() - start)) < 1.0:
            rate = lr(run.step, spent)
            for group in opt.param_groups:
                group["lr"] = rate
            value = loss()
            opt.zero_grad(set_to_none=True)
            value.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            run.step += 1
            run.seconds = time.perf_counter() - start
            x = value.item()
            run.loss = x if run.loss is None else (1 - average) * run.loss + average * x
            shown.step(run, spent, rate)
            if log_every and run.step % log_every == 0:
                run.history.append((log or _row)(run))
                shown.row(run.history[-1])
                if stop is not None and stop(run.history[-1]):
                    run.stopped_early = True
                    break
            if interrupted:
                _save(checkpoint, model, opt, data, settings, run)
                raise SteerableError(f"interrupted at step {run.step}: saved {checkpoint}; rerun to resume from it")
            if checkpoint is not None and time.perf_counter() - saved >= CHECKPOINT_SECONDS:
                _save(checkpoint, model, opt, data, settings, run)
                saved = time.perf_counter()
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    if run.step == 0:
        raise ConfigError("no training step fitted in the time given: raise --minutes or pass --steps")
    return run


def _row(run: Run) -> dict:
    return {"step": run.step, "seconds": round(run.seconds, 1), "loss_ema": round(run.loss, 4)}


# ---- checkpoints --------------------------------------------------------------------------------------------


def _save(path: Path, model, opt, data, settings, run: Run) -> None:
    """Everything a resumed run needs, written whole or not at all (a kill while writing keeps the last one)."""
    state = {
        "settings": _settings_json(settings),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "data": None if data is None else data.get_state() if isinstance(data, torch.Generator) else data.state_dict(),
        "run": {k: getattr(run, k) for k in ("step", "seconds", "loss", "history")},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path.with_name(path.name + ".tmp"))
    os.replace(path.with_name(path.name + ".tmp"), path)


def _resume(path: Path, model, opt, data, settings) -> Run:
    """The run the checkpoint at ``path`` holds, its states loaded into ``model``, ``opt``, ``data``; or a new run."""
    if not path.exists():
        return Run()
    try:
        state = torch.load(path, weights_only=True)
    except Exception:  # a cut or foreign file (torch's message runs to many lines): say which, and how to go on
        raise ConfigError(f"{path} is not a checkpoint this loop wrote: delete it to start over") from None
    old, new = json.loads(state["settings"]), json.loads(_settings_json(settings))
    differ = sorted(k for k in old.keys() | new.keys() if k not in MAY_DIFFER and old.get(k) != new.get(k))
    if differ:
        k = differ[0]
        raise ConfigError(
            f"{path} is a checkpoint of other settings ({k} {old.get(k)!r}, now {new.get(k)!r}): rerun with its "
            "settings to resume, or delete it to start over"
        )
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if data is not None:
        data.set_state(state["data"]) if isinstance(data, torch.Generator) else data.load_state_dict(state["data"])
    run = Run(**state["run"])
    run.resumed_at = run.step
    print(f"{path}: resuming at step {run.step} ({run.seconds:.0f} s spent)", file=sys.stderr, flush=True)
    return run


def _settings_json(settings: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(settings or {}), default=str, sort_keys=True)


@contextlib.contextmanager
def _interrupts(active: bool) -> Iterator[list[int]]:
    """Within: SIGINT and SIGTERM only fill the list, read after each step; a second Ctrl-C stops at once."""
    caught: list[int] = []
    if not active or threading.current_thread() is not threading.main_thread():  # signals reach the main thread
        yield caught
        return

    def handler(signum: int, frame: Any) -> None:
        if caught and signum == signal.SIGINT:
            raise KeyboardInterrupt
        caught.append(signum)
        print("stopping after this step to write a checkpoint (Ctrl-C again: at once, without one)", file=sys.stderr)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


# ---- progress -----------------------------------------------------------------------------------------------


def minute_lines(label: str, total: int | None, progress: bool) -> Callable[..., None]:
    """``tick(done, note)``: off a terminal (nohup, a pipe, CI), a progress line on stderr every minute."""
    if not progress or sys.stderr.isatty():
        return lambda done, note="": None
    t0 = last = time.perf_counter()

    def tick(done: int, note: str = "") -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last >= 60 or done == total:
            last = now
            count = f"{done}/{total}" if total else f"{done}"
            print(f"{label} {count}{note}, {now - t0:.0f}s", file=sys.stderr, flush=True)

    return tick


class _Shown:
    """The loop's progress: a bar on a terminal, else :func:`minute_lines`; log rows on stderr."""

    def __init__(self, label: str, budget: Budget, progress: bool) -> None:
        self.on, self.bar = progress, None
        self.tick = minute_lines(f"{label}: step", budget.steps, progress)
        if progress and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn(f"[bold]{label}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}% step {task.fields[step]} loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> _Shown:
        if self.bar is not None:
            self.bar.__enter__()
            self.task = self.bar.add_task("train", total=1.0, step=0, loss="-")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def step(self, run: Run, spent: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=min(spent, 1.0), step=run.step, loss=f"{run.loss:.4f}")
        self.tick(run.step, f" ({spent:.0%}), loss {run.loss:.4f}, lr {rate:.2e}")

    def row(self, row: dict) -> None:
        if self.bar is not None:
            self.bar.console.print(row)
        elif self.on:
            print(row, file=sys.stderr, flush=True)
