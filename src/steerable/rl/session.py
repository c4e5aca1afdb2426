"""What every RL loop of ``steerable train rl`` shares (TRL's trainer in :mod:`steerable.rl.run`, T-PPO's windows
in :mod:`steerable.rl.tppo`): the task's rows, the held-in evaluation, the run's clock, and the summary and curves
it ends with."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from steerable.errors import ConfigError, InputError
from steerable.streams import derive_seed

if TYPE_CHECKING:
    from steerable.rl.algos import Algo

TEST_PROBLEMS = 200  # `steerable builtin eval`'s default


def builtin_split(task: str) -> tuple[str, bool]:
    """``builtin:SPLIT`` (training problems) or ``builtin:SPLIT:test`` (the held-out evaluation problems
    that ``steerable builtin eval --split SPLIT`` scores, for label-free test-time RL)."""
    parts = task.split(":")
    if len(parts) == 3 and parts[2] == "test":
        return parts[1], True
    if len(parts) != 2:
        raise ConfigError(f"task {task!r}: write builtin:SPLIT or builtin:SPLIT:test")
    return parts[1], False


def task_rows(task: str, n: int, seed: int) -> list[dict]:
    """Training rows ``{prompt, answer}`` (agent tasks: and ``task``); labels may be absent (TTRL)."""
    from steerable.rl import agent

    t = agent.parse_task(task)
    if t is not None:
        return agent.train_rows(t, n, seed)
    if task.startswith("builtin:"):
        from steerable.tasks.builtin import arithmetic as A

        split, test = builtin_split(task)
        if test:  # the same problems (seed 0) that `steerable builtin eval --split SPLIT` scores
            return [{"prompt": p.prompt, "answer": str(p.answer)} for p in A.eval_problems(split, TEST_PROBLEMS)]
        lo, hi = A.split_range(split)
        rng = random.Random(seed)
        return [{"prompt": p.prompt, "answer": str(p.answer)} for p in (A.train_problem(rng, lo, hi) for _ in range(n))]
    from steerable.tasks.loader import read_jsonl

    rows = []
    for line, row in read_jsonl(Path(task), "a 'prompt' field"):
        if not isinstance(row.get("prompt"), str):
            raise InputError(f"{task}:{line} needs a string 'prompt'")
        rows.append({"prompt": row["prompt"], "answer": None if row.get("answer") is None else str(row["answer"])})
    if not rows:
        raise InputError(f"{task} has no rows")
    return rows


def held_in_rows(task: str, n: int, seed: int) -> list[dict]:
    """A fixed held-in evaluation set: the training distribution, drawn with another seed (for a test-time
    run, the test problems themselves: TTRL reports on the prompts it adapts to)."""
    from steerable.rl.agent import parse_task

    if parse_task(task) is not None or task.startswith("builtin:") and not builtin_split(task)[1]:
        return task_rows(task, n, derive_seed(seed, "held-in"))
    rows = [r for r in task_rows(task, 10**9, seed) if r["answer"] is not None]
    return rows[:n]


class EvalTimes:
    """The run's held-in evaluations timed apart (wall and CPU seconds), and this process's CPU seconds since the
    run began: on a loaded machine the CPU clock compares runs where the wall clock does not."""

    def __init__(self) -> None:
        self.seconds = self.cpu_seconds = 0.0
        self.cpu_start = time.process_time()

    def timed(self, evaluate: Callable[[], float]) -> float:
        t0, c0 = time.perf_counter(), time.process_time()
        out = evaluate()
        self.seconds += time.perf_counter() - t0
        self.cpu_seconds += time.process_time() - c0
        return out

    def cpu(self) -> float:
        """This process's CPU seconds since the run began, rounded for a metrics row."""
        return round(time.process_time() - self.cpu_start, 1)

    def totals(self) -> dict:
        """The evaluations' share of ``seconds`` and ``cpu_seconds`` so far, for a metrics row."""
        return {"eval_seconds": round(self.seconds, 1), "eval_cpu_seconds": round(self.cpu_seconds, 1)}


def greedy_accuracy(model, tokenizer, rows: list[dict], extract, max_new: int) -> float:
    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.rl.rollouts import eval_mode

    with eval_mode(model):
        gen = LocalGenerator(model, tokenizer)
        outs = gen.generate([r["prompt"] for r in rows], SamplingParams(temperature=0, max_new_tokens=max_new))
    ok = [r["answer"] is not None and str(extract(o.text)) == str(r["answer"]) for o, r in zip(outs, rows, strict=True)]
    return sum(ok) / max(1, len(ok))


def prompts(cfg, algo: Algo, tok) -> tuple[list[dict], list[dict]]:
    """The training rows (with the prior prompt; unlabelled for label-free RL) and the held-in evaluation rows
    of a run (``cfg``: its :class:`~steerable.rl.run.RLRunConfig`, which imports this module)."""
    from steerable.rl.rewards import apply_template

    rows = task_rows(cfg.task, 20_000 if cfg.task.startswith("builtin:") else 0, cfg.seed)
    if len(rows) < cfg.prompts_per_step:  # TRL would run 0 steps and say nothing
        raise InputError(
            f"{cfg.task} has {len(rows)} rows but a step takes --prompts-per-step {cfg.prompts_per_step}: "
            "lower it or give more rows"
        )
    held_in = held_in_rows(cfg.task, cfg.eval_n, cfg.seed)
    for r in rows + held_in:
        r["prompt"] = apply_template(cfg.template, r["prompt"], tok)
    if algo.reward == "majority":
        for r in rows:
            r["answer"] = None  # TTRL trains without labels
    return rows, held_in


class Clock:
    """The wall time a run has spent, earlier sessions included: ``path`` keeps it across a resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.before = json.loads(path.read_text())["seconds"] if path.exists() else 0.0
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start

    def save(self) -> None:
        self.path.write_text(json.dumps({"seconds": self.seconds()}))


def finish(cfg, out: Path, step: int, clock: Clock, final: float, resumed: dict | None) -> dict:
    """The summary (also ``summary.json``), the final row of ``metrics.jsonl`` and ``curves.png``; ``step`` is
    the trainer's (0 when a spent budget was rerun: the summary then counts the resumed checkpoint's)."""
    metrics = out / "metrics.jsonl"
    hist = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    summary = {
        "algo": cfg.algo,
        "steps": step or (resumed or {}).get("step", 0),
        "seconds": round(json.loads(clock.path.read_text())["seconds"], 1),
        "held_in_accuracy_start": next((h["held_in_accuracy"] for h in hist if "held_in_accuracy" in h), None),
        "held_in_accuracy_end": final,
        "out": str(out),
    }
    if resumed is not None:
        summary["resumed"] = resumed
    with metrics.open("a") as f:
        f.write(json.dumps({"step": step, "held_in_accuracy": final, "final": True}) + "\n")
    plot_curves(metrics, out / "curves.png", title=f"{cfg.algo} on {cfg.task}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def builtin_prm():
    from steerable.reward.prm import TokenClassifierPRM

    return TokenClassifierPRM.from_pretrained("builtin", device="cpu")


def plot_curves(
    metrics: Path, png: Path, title: str = "", others: dict[str, Path] | None = None, first_label: str = ""
) -> None:
    """Reward, held-in accuracy, entropy and mean length against steps (several runs: ``others``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {first_label: metrics, **(others or {})}
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    keys = [
        ("reward", "reward"),
        ("held_in_accuracy", "held-in greedy accuracy"),
        ("entropy", "entropy"),
        ("completions/mean_length", "mean completion length"),
    ]
    for label, path in runs.items():
        rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
        for ax, (key, name) in zip(axes, keys, strict=True):
            pts = [(r["step"], r[key]) for r in rows if key in r and not r.get("final")]
            if pts:
                xs, ys = zip(*pts, strict=True)
                if key != "held_in_accuracy" and len(ys) > 10:  # smooth noisy per-step values
                    k = max(1, len(ys) // 25)
                    ys = [sum(ys[max(0, i - k) : i + 1]) / len(ys[max(0, i - k) : i + 1]) for i in range(len(ys))]
                ax.plot(xs, ys, label=label or None, marker="o" if key == "held_in_accuracy" else None)
            ax.set_title(name)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    if others:
        axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
