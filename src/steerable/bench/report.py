"""Reading a scaling run back: the summary, its table, its plot, and progress lines for logs.

``summarise`` turns results rows into accuracy (with its standard error) and
mean cost per method and budget; ``table`` prints that without truncating a
number; ``plot`` draws accuracy against tokens for one or several run
directories, with budget labels and standard-error bars; ``ProgressLines``
prints a line a minute when no terminal shows a progress bar.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

#: What a language-model run costs, averaged per (method, budget).
LM_COST = ("generated_tokens", "forward_tokens", "scorer_calls", "scorer_tokens", "seconds")
#: How the plot names a cost on its x axis.
X_LABELS = {"generated_tokens": "tokens generated", "nfe": "denoiser evaluations (NFE)"}


def summarise(
    rows: list[dict],
    methods: Sequence[str],
    budgets: Sequence[int],
    items: set[str] | None = None,
    cost: Sequence[str] = LM_COST,
) -> dict:
    """Accuracy (± standard error) and the mean of each ``cost`` field per (method, budget) over ``items``.

    ``items`` defaults to every row's; greedy counts at budget 1 whatever the budgets are.
    """
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        if r["method"] in methods and (items is None or r["item"] in items):
            groups[(r["method"], r["budget"])].append(r)
    table = []
    order = {m: i for i, m in enumerate(methods)}
    for (method, budget), rs in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        if budget not in budgets and not (method == "greedy" and budget == 1):
            continue
        n = len(rs)
        ok = [r for r in rs if "error" not in r]
        mean = lambda k, ok=ok: round(sum(r.get(k, 0) for r in ok) / max(len(ok), 1), 2)  # noqa: E731
        p = sum(bool(r["correct"]) for r in rs) / n
        counts: dict[str, int] = defaultdict(int)  # how often a mechanism fired (PF: resampling, annealing)
        for r in ok:
            for k, v in r.get("counts", {}).items():
                counts[k] += v
        table.append(
            {
                "method": method,
                "budget": budget,
                "items": n,
                "errors": n - len(ok),
                "accuracy": round(p, 4),
                "stderr": round(math.sqrt(p * (1 - p) / n), 4),
                **{k: mean(k) for k in cost},
                **({"counts": dict(counts)} if counts else {}),
            }
        )
    return {"rows": table}


COLUMNS = (
    ("method", "method"),
    ("budget", "budget"),
    ("items", "items"),
    ("accuracy", "accuracy"),
    ("stderr", "± s.e."),
    ("generated_tokens", "gen tok"),
    ("forward_tokens", "fwd tok"),
    ("scorer_calls", "scorer calls"),
    ("scorer_tokens", "scorer tok"),
    ("seconds", "sec/item"),
    ("errors", "errors"),
)


def table(summary: dict, title: str):
    """A rich table of the summary whose cells are never cut: columns fold rather than truncate."""
    from rich.table import Table

    t = Table(title=title)
    for key, name in COLUMNS:
        t.add_column(name, justify="left" if key == "method" else "right", overflow="fold", no_wrap=False)
    for r in summary["rows"]:
        t.add_row(*(_cell(key, r.get(key)) for key, _ in COLUMNS))
    return t


def _cell(key: str, v) -> str:
    if key in ("accuracy", "stderr"):
        return f"{v:.4f}"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return str(v)


def title_of(settings: dict, items: int) -> str:
    """``builtin:hard, 200 items, scorer builtin-prm, T 0.8``: what a plot or table shows."""
    parts = [str(settings.get("task", "?")), f"{items} items", f"scorer {settings.get('scorer', '?')}"]
    if "temperature" in settings:
        parts.append(f"T {settings['temperature']:g}")
    if settings.get("top_p", 1.0) != 1.0:
        parts.append(f"top-p {settings['top_p']:g}")
    if settings.get("budget_unit") == "tokens":
        parts.append("budgets in tokens")
    return ", ".join(parts)


def plot(runs: Sequence[tuple[str, dict]], path: Path, title: str = "", x: str = "generated_tokens") -> Path:
    """Accuracy (± one standard error) against the mean of cost ``x``, one line per method and run, to ``path``.

    ``runs`` is ``(label, summary)`` per run directory (label ``""`` for one
    run). Each point is labelled with its budget; the y axis spans at least
    0.2 so that two close points do not look like a cliff.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    draw(ax, runs, title, x)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw(ax, runs: Sequence[tuple[str, dict]], title: str = "", x: str = "generated_tokens") -> None:
    """What :func:`plot` draws, on the matplotlib axes ``ax``."""
    lows, highs = [], []
    markers = "osD^vP*X"
    for k, (label, summary) in enumerate(runs):
        by_method: dict[str, list[dict]] = defaultdict(list)
        for r in summary["rows"]:
            by_method[r["method"]].append(r)
        for method, rs in by_method.items():
            rs = sorted(rs, key=lambda r: r[x])
            xs = [max(r[x], 1e-9) for r in rs]
            ys = [r["accuracy"] for r in rs]
            es = [r.get("stderr", 0.0) for r in rs]
            name = f"{method} ({label})" if label else method
            line = ax.errorbar(xs, ys, yerr=es, marker=markers[k % len(markers)], capsize=3, label=name)
            for px, py, r in zip(xs, ys, rs, strict=True):
                ax.annotate(
                    str(r["budget"]), (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7,
                    color=line[0].get_color(),
                )  # fmt: skip
            lows += [y - e for y, e in zip(ys, es, strict=True)]
            highs += [y + e for y, e in zip(ys, es, strict=True)]
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_ylim(*y_range(lows, highs))
    ax.set_xlabel(f"{X_LABELS.get(x, x)} per item (mean)")
    ax.set_ylabel("accuracy (± 1 s.e.)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def y_range(lows: Sequence[float], highs: Sequence[float], least: float = 0.2, pad: float = 0.03):
    """A y range holding every error bar with ``pad`` around it, at least ``least`` tall, inside [-pad, 1 + pad]."""
    if not lows:
        return -pad, 1.0 + pad
    lo, hi = max(0.0, min(lows)) - pad, min(1.0, max(highs)) + pad
    if hi - lo < least:
        mid = (lo + hi) / 2
        lo, hi = mid - least / 2, mid + least / 2
        if lo < -pad:
            lo, hi = -pad, -pad + least
        if hi > 1 + pad:
            lo, hi = 1 + pad - least, 1 + pad
    return lo, hi


class ProgressLines:
    """Off a terminal, a line on stderr every ``every`` seconds: done/total, ETA, running accuracy per method."""

    def __init__(self, what: str, total: int, done: int, every: float = 60.0, stream=None):
        self.what, self.total, self.done0, self.every = what, total, done, every
        self.stream = stream or sys.stderr
        self.done = done
        self.correct: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ProgressLines:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, row: dict) -> None:
        with self._lock:
            self.done += 1
            c = self.correct[row["method"]]
            c[0] += bool(row.get("correct", row.get("success")))  # an agent row says success
            c[1] += 1

    def line(self) -> str:
        with self._lock:
            elapsed = time.monotonic() - self.t0
            new = self.done - self.done0
            left = self.total - self.done
            eta = _duration(elapsed / new * left) if new else "unknown"
            acc = ", ".join(f"{m} {c / n:.3f} ({n})" for m, (c, n) in self.correct.items())
            return f"{self.what}: {self.done}/{self.total} done, {_duration(elapsed)} elapsed, ETA {eta}" + (
                f"; accuracy so far: {acc}" if acc else ""
            )

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            print(self.line(), file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
