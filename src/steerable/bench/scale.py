"""Accuracy against compute: every (item, method, budget) once, written as it goes, resumable.

``results.jsonl`` gets one line per (item, method, budget) the moment it is
done; a rerun with the same ``--out`` skips the lines already there, after
cutting a line a kill left half-written. ``settings.json`` records what the
rows depend on (:mod:`steerable.bench.settings`): a rerun with other settings
is refused. At the end ``summary.json`` holds the settings and, over this
run's items, accuracy (± standard error) and mean cost per method and budget,
and ``accuracy_vs_tokens.png`` plots accuracy against tokens generated.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from steerable.bench.report import LM_COST
from steerable.errors import ConfigError, SteerableError
from steerable.reward.scorer import CachedScorer
from steerable.search.registry import UNSCORED, make_strategy
from steerable.streams import item_seed
from steerable.tasks.answers import AnswerChecker
from steerable.tasks.loader import Item


def _key(item_id: str, method: str, budget: int) -> str:
    return f"{item_id}\t{method}\t{budget}"


def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by an interruption is redone
    return rows


def cut_partial_line(path: Path) -> int:
    """Cut a half-written last line (a kill mid-write) so the next row starts on its own line; bytes cut."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as f:
        f.truncate(keep)
    return len(data) - keep


def run_job(
    strategies: dict,
    make_process: Callable[[str], object],
    scorer,
    checker: AnswerChecker,
    i: int,
    item: Item,
    method: str,
    budget: int,
    seed: int,
    unit: str,
    tokens_per_sample: float | None,
) -> dict:
    """One (item, method, budget) run: the results.jsonl row. Depends on nothing but its arguments."""
    row = {"item": item.id, "method": method, "budget": budget, "gold": item.answer}
    t0 = time.perf_counter()
    try:
        if isinstance(scorer, CachedScorer):
            scorer.clear_cache()  # each run pays for its own scoring: no prefixes cached by another method
        process = make_process(method)
        width = budget
        if unit == "tokens":
            process.token_budget = budget
            width = max(1, int(budget // tokens_per_sample))
            row["width"] = width
        res = strategies[method].run(
            process,
            None if method in UNSCORED else scorer,
            width,
            item.prompt,
            seed=item_seed(seed, i),
        )
        row.update(
            answer=res.answer,
            correct=checker.correct(res.text, item.answer),
            generated_tokens=res.cost.generated_tokens,
            forward_tokens=res.cost.forward_tokens,
            scorer_calls=res.cost.scorer_calls,
            scorer_tokens=res.cost.scorer_tokens,
            seconds=res.cost.seconds,
            candidates=len(res.candidates),
        )
        if res.info.get("counts"):  # how often a strategy's mechanism fired (PF: resampling and annealing steps)
            row["counts"] = res.info["counts"]
    except SteerableError as e:  # one bad item is recorded and the run goes on
        row.update(error=str(e), correct=False, seconds=round(time.perf_counter() - t0, 4))
    return row


class LocalExecutor:
    """Runs jobs one after another in this process."""

    def __init__(self, make_process: Callable[[str], object], scorer, checker: AnswerChecker):
        self.make_process, self.scorer, self.checker = make_process, scorer, checker

    def calibrate(self, items: Sequence[Item]) -> float:
        return measure_tokens_per_sample(self.make_process, items)

    def run(self, jobs: list[tuple], methods: Sequence[str], seed: int, unit: str, tps: float | None) -> Iterator[dict]:
        strategies = {m: make_strategy(m, self.checker.extract) for m in methods}
        for i, item, method, budget in jobs:
            yield run_job(
                strategies, self.make_process, self.scorer, self.checker, i, item, method, budget, seed, unit, tps
            )


def run_scale(
    items: Sequence[Item],
    methods: Sequence[str],
    budgets: Sequence[int],
    make_process: Callable[[str], object] | None,
    scorer,
    checker: AnswerChecker,
    out: Path,
    seed: int = 0,
    progress: bool = True,
    unit: str = "samples",
    tokens_per_sample: float | None = None,
    executor=None,
    strategies: Callable[[str], object] | None = None,
    cost: Sequence[str] = LM_COST,
    x: str = "generated_tokens",
    settings: dict | None = None,
    report_every: float | None = None,
) -> dict:
    """Run every (item, method, budget); ``unit="tokens"`` makes each budget a cap on generated tokens.

    ``settings`` (see :mod:`steerable.bench.settings`) are recorded in
    ``out/settings.json``; resuming with different ones is an error. The
    summary counts only ``items`` (this run's), ``methods`` and ``budgets``,
    whatever else the directory holds. With samples, greedy runs once, at
    budget 1 (more samples do not change a greedy answer).

    With token budgets every run of every method may generate at most ``budget``
    tokens (the process enforces it exactly), and the width of a method (samples,
    particles, beams, simulations) is ``budget // tokens_per_sample``. Unless
    given, ``tokens_per_sample`` is measured once per run directory as the mean
    length of sampled solutions of the first 8 items and recorded in
    ``settings.json``, so reruns use the same widths.

    ``executor`` runs the jobs (default: here, one after another; a
    :class:`steerable.bench.distributed.RayExecutor` spreads them over Ray
    workers). Rows are written in the order they finish; every job's seed
    depends only on its item's index, so the numbers are the same either way.
    ``progress`` shows a bar; ``report_every`` (seconds) prints progress lines
    instead, for logs.

    Another model family brings its own ``executor`` (rows with its own cost
    fields), ``strategies`` (a method by name, to refuse unknown ones before
    any work; default: the language-model registry), the ``cost`` fields to
    average and the plot's ``x`` (diffusion: ``nfe``).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from steerable.bench.report import ProgressLines, plot, summarise, title_of
    from steerable.bench.settings import record_settings

    if unit not in ("samples", "tokens"):
        raise ConfigError(f"unknown budget unit {unit!r}: use samples or tokens")
    for m in methods:  # an unknown method fails before any work
        strategies(m) if strategies is not None else make_strategy(m, checker.extract)
    executor = executor or LocalExecutor(make_process, scorer, checker)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    settings = {**(settings or {}), "seed": seed, "budget_unit": unit}
    if unit == "tokens" and tokens_per_sample is not None:
        if tokens_per_sample <= 0:
            raise ConfigError(f"tokens per sample must be > 0 (got {tokens_per_sample})")
        settings["tokens_per_sample"] = float(tokens_per_sample)
    settings = record_settings(out, settings)
    if unit == "tokens":
        if "tokens_per_sample" not in settings:
            settings = record_settings(out, {**settings, "tokens_per_sample": executor.calibrate(items)})
        tokens_per_sample = settings["tokens_per_sample"]
    cut_partial_line(path)
    done = {_key(r["item"], r["method"], r["budget"]) for r in read_results(path)}
    jobs = [
        (i, it, m, b)
        for i, it in enumerate(items)
        for m in methods
        for b in ([1] if m == "greedy" and unit == "samples" else budgets)
    ]
    todo = [j for j in jobs if _key(j[1].id, j[2], j[3]) not in done]
    lines = ProgressLines(f"scale {out}", len(jobs), len(jobs) - len(todo), report_every or 60.0)
    with (
        path.open("a") as f,
        Progress(
            TextColumn("[bold]scale"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[what]}"),
            TimeElapsedColumn(),
            disable=not progress,
        ) as bar,
        lines if report_every else contextlib.nullcontext(),
    ):
        task = bar.add_task("scale", total=len(jobs), completed=len(jobs) - len(todo), what="")
        for row in executor.run(todo, methods, seed, unit, tokens_per_sample):
            f.write(json.dumps(row) + "\n")
            f.flush()
            bar.update(task, advance=1, what=f"{row['method']}@{row['budget']}")
            lines.add(row)
    summary = summarise(read_results(path), methods, budgets, {it.id for it in items}, cost)
    summary = {"settings": settings, "items": len(items), **summary}
    if unit == "tokens":
        summary["tokens_per_sample"] = tokens_per_sample
    summary["unit"] = unit
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    name = "tokens" if x == "generated_tokens" else x
    plot([("", summary)], out / f"accuracy_vs_{name}.png", title_of(settings, len(items)), x)
    return summary


def measure_tokens_per_sample(make_process, items: Sequence[Item]) -> float:
    """4 samples of each of the first 8 items at the settings every non-greedy method uses."""
    from steerable.search.base import run_to_end

    process = make_process("calibration")
    lengths = []
    for i, item in enumerate(items[:8]):
        u0 = process.usage.generated_tokens
        run_to_end(process, process.init(item.prompt, 4, seed=i))
        lengths.append((process.usage.generated_tokens - u0) / 4)
    return round(sum(lengths) / len(lengths), 2)
