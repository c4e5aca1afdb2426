import io
import json
import math
import runpy
import time
from pathlib import Path

import matplotlib
import pytest

from steerable.bench.report import ProgressLines, draw, summarise, table, y_range

matplotlib.use("Agg")


def _rows(method, budget, correct, tokens):
    return [
        {"item": f"i{k}", "method": method, "budget": budget, "correct": c, "generated_tokens": tokens}
        for k, c in enumerate(correct)
    ]


def test_summary_carries_the_standard_error_of_each_accuracy():
    rows = _rows("sc", 4, [1, 1, 1, 0], 100) + _rows("greedy", 1, [1, 0, 0, 0], 25)
    s = summarise(rows, ["greedy", "sc"], [4])
    by = {(r["method"], r["budget"]): r for r in s["rows"]}
    assert by[("sc", 4)]["accuracy"] == 0.75 and by[("sc", 4)]["stderr"] == round(math.sqrt(0.75 * 0.25 / 4), 4)
    assert by[("greedy", 1)]["accuracy"] == 0.25  # greedy stays at budget 1 whatever the budgets are
    assert summarise(rows, ["sc"], [4], items={"i0", "i3"})["rows"][0]["items"] == 2


@pytest.mark.parametrize(
    "lows, highs",
    [([0.80, 0.82], [0.80, 0.82]), ([0.98], [1.0]), ([0.0], [0.03]), ([0.1, 0.6], [0.2, 0.9])],
)
def test_the_y_axis_holds_every_bar_and_spans_at_least_a_fifth(lows, highs):
    lo, hi = y_range(lows, highs, pad=0.03)
    assert -0.03 <= lo < min(lows) and max(highs) < hi <= 1.03  # every bar inside, a margin around it
    assert hi - lo >= 0.2 - 1e-12


def test_the_plot_labels_budgets_draws_error_bars_and_takes_several_runs():
    import matplotlib.pyplot as plt

    a = summarise(_rows("sc", 2, [1, 0, 1, 1], 50) + _rows("sc", 8, [1, 1, 1, 0], 200), ["sc"], [2, 8])
    b = summarise(_rows("pf", 2, [1, 1, 1, 1], 60), ["pf"], [2])
    fig, ax = plt.subplots()
    draw(ax, [("run-a", a), ("run-b", b)], "builtin:hard, 4 items, scorer oracle")
    assert sorted(t.get_text() for t in ax.texts) == ["2", "2", "8"]
    assert len(ax.containers) == 2  # one errorbar container per (run, method)
    assert ax.containers[0].has_yerr
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sc (run-a)", "pf (run-b)"]
    assert ax.get_title() == "builtin:hard, 4 items, scorer oracle"
    lo, hi = ax.get_ylim()
    assert hi - lo >= 0.2
    plt.close(fig)


def test_the_table_never_cuts_a_number():
    from rich.console import Console

    rows = _rows("sc", 16, [1, 0], 2051.25)
    out = io.StringIO()
    Console(file=out, width=400).print(table(summarise(rows, ["sc"], [16]), "t"))
    assert "2051.2" in out.getvalue() and "…" not in out.getvalue()


def test_progress_lines_report_done_total_eta_and_accuracy_per_method():
    stream = io.StringIO()
    with ProgressLines("scale runs/x", total=10, done=2, every=0.02, stream=stream) as lines:
        for r in _rows("sc", 4, [1, 0], 1) + _rows("pf", 4, [1], 1):
            lines.add(r)
        time.sleep(0.2)
    first = stream.getvalue().splitlines()[0]
    assert first.startswith("scale runs/x: 5/10 done,") and "ETA " in first
    assert "accuracy so far: sc 0.500 (2), pf 1.000 (1)" in first


def test_scaling_report_plots_several_directories(tmp_path, capsys):
    for name, acc in (("a", [1, 0]), ("b", [1, 1])):
        d = tmp_path / name
        d.mkdir()
        (d / "results.jsonl").write_text("\n".join(json.dumps(r) for r in _rows("sc", 4, acc, 10)) + "\n")
    script = Path(__file__).parents[2] / "benchmarks" / "scaling_report.py"
    main = runpy.run_path(str(script))["main"]
    main([str(tmp_path / "a"), str(tmp_path / "b"), "--plot", str(tmp_path / "both.png")])
    assert (tmp_path / "both.png").stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out
