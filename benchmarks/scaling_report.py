"""Read `steerable scale` result directories and answer the PF paper's questions, side by side.

    python benchmarks/scaling_report.py runs/sweep-a [runs/sweep-b ...] [--plot out.png]

Prints accuracy (± one standard error) and mean cost per method and budget
over the items every method in a directory finished, then paired comparisons
on the same items: PF at N against self-consistency at 4N (the paper's claim
that PF beats voting per budget), PF against best-of-N and beam search at
the same N, ePF against PF at each N, and each method at its largest budget
against its smallest (does it fall as N grows?), each with the items only
one side solved (a sign test's inputs) and the tokens each spent.
``--plot`` draws every directory's accuracy against tokens on one plot
(budget labels, standard-error bars; each directory's own summary.json).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

from steerable.bench.report import plot, summarise, title_of


def load(dirs: list[str]) -> dict[tuple[str, int], dict[str, dict]]:
    """(method, budget) -> item -> row; the first directory that has a row wins."""
    runs: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for d in dirs:
        for line in (Path(d) / "results.jsonl").read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            runs[(r["method"], r["budget"])].setdefault(r["item"], r)
    return runs


def sign_test(a_only: int, b_only: int) -> float:
    """Two-sided exact binomial p-value of a_only vs b_only discordant items."""
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def compare(runs, a: tuple[str, int], b: tuple[str, int]) -> str | None:
    if a not in runs or b not in runs:
        return None
    items = sorted(set(runs[a]) & set(runs[b]))
    if not items:
        return None
    ra, rb = runs[a], runs[b]
    acc = lambda r: sum(bool(r[i]["correct"]) for i in items) / len(items)  # noqa: E731
    tok = lambda r: sum(r[i].get("generated_tokens", 0) for i in items) / len(items)  # noqa: E731
    a_only = sum(bool(ra[i]["correct"]) and not rb[i]["correct"] for i in items)
    b_only = sum(bool(rb[i]["correct"]) and not ra[i]["correct"] for i in items)
    return (
        f"{a[0]}@{a[1]} {acc(ra):.1%} ({tok(ra):.0f} tok) vs {b[0]}@{b[1]} {acc(rb):.1%} ({tok(rb):.0f} tok) "
        f"on {len(items)} items: only {a[0]}@{a[1]} {a_only}, only {b[0]}@{b[1]} {b_only}, "
        f"sign test p = {sign_test(a_only, b_only):.2f}"
    )


def run_summary(d: str) -> dict:
    """A directory's summary.json, or one made from its results.jsonl (every method and budget in it)."""
    path = Path(d) / "summary.json"
    if path.exists():
        return json.loads(path.read_text())
    rows = [r for by_item in load([d]).values() for r in by_item.values()]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    return summarise(rows, methods, sorted({r["budget"] for r in rows}))


def plot_dirs(dirs: list[str], png: Path) -> Path:
    """Every directory's methods on one plot, labelled by directory when there are several."""
    summaries = [run_summary(d) for d in dirs]
    titles = list(dict.fromkeys(title_of(s.get("settings", {}), s.get("items", 0)) for s in summaries))
    labels = [Path(d).name or d for d in dirs] if len(dirs) > 1 else [""]
    return plot(list(zip(labels, summaries, strict=True)), png, "\n".join(titles))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="*", default=["runs/scale"], help="steerable scale output directories")
    ap.add_argument("--plot", type=Path, help="draw every directory's accuracy against tokens into this PNG")
    args = ap.parse_args(argv)
    dirs = args.dirs
    runs = load(dirs)
    print(f"{'method':<8} {'budget':>6} {'items':>5} {'accuracy':>14} {'gen tok':>8} {'PRM tok':>8} {'sec':>6}")
    for (method, budget), rows in sorted(runs.items()):
        n = len(rows)
        p = sum(bool(r["correct"]) for r in rows.values()) / n
        se = math.sqrt(p * (1 - p) / n)
        mean = lambda k, rows=rows: sum(r.get(k, 0) for r in rows.values()) / len(rows)  # noqa: E731
        print(
            f"{method:<8} {budget:>6} {n:>5} {p:>8.1%} ±{se:>4.1%} {mean('generated_tokens'):>8.0f} "
            f"{mean('scorer_tokens'):>8.0f} {mean('seconds'):>6.2f}"
        )
    print()
    budgets = sorted({b for _, b in runs})
    for n in budgets:
        for a, b in (
            (("pf", n), ("sc", 4 * n)),
            (("pf", n), ("bon", n)),
            (("pf", n), ("beam", n)),
            (("epf", n), ("pf", n)),
        ):
            if line := compare(runs, a, b):
                print(line)
    for method in sorted({m for m, _ in runs}):
        own = sorted(b for m, b in runs if m == method)
        if len(own) > 1 and (line := compare(runs, (method, own[-1]), (method, own[0]))):
            print(line)
    if args.plot:
        print(f"wrote {plot_dirs(dirs, args.plot)}")


if __name__ == "__main__":
    main()
