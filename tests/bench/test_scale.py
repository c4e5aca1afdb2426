import json

import pytest

from conftest import tiny_model
from steerable.bench.scale import read_results, run_scale
from steerable.errors import ConfigError
from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams
from steerable.search.lm_process import LMProcess
from steerable.tasks.answers import make_checker
from steerable.tasks.builtin.verifier import OraclePRM
from steerable.tasks.loader import load_task


@pytest.fixture(scope="module")
def make_process(char_tokenizer):
    gen = LocalGenerator(tiny_model("llama", char_tokenizer), char_tokenizer)
    return lambda method: LMProcess(
        gen, delimiter="\n", params=SamplingParams(temperature=1.0), max_step_tokens=4, max_steps=2, max_tokens=8
    )


def test_scale_writes_as_it_goes_and_resumes_without_redoing(tmp_path, make_process):
    items = load_task("builtin:easy", limit=3)
    args = (items, ["greedy", "sc", "pf"], [1, 2], make_process, OraclePRM(), make_checker("builtin"), tmp_path)
    summary = run_scale(*args, seed=1, progress=False)
    rows = read_results(tmp_path / "results.jsonl")
    assert len(rows) == 3 * (1 + 2 + 2)  # greedy runs at the first budget only
    assert {(r["method"], r["budget"]) for r in summary["rows"]} == {
        ("greedy", 1),
        ("sc", 1),
        ("sc", 2),
        ("pf", 1),
        ("pf", 2),
    }
    assert (tmp_path / "accuracy_vs_tokens.png").stat().st_size > 1000
    pf2 = next(r for r in summary["rows"] if (r["method"], r["budget"]) == ("pf", 2))  # how often PF resampled
    mine = [r["counts"] for r in rows if (r["method"], r["budget"]) == ("pf", 2)]
    assert pf2["counts"] == {k: sum(c[k] for c in mine) for k in ("resampling_steps", "annealed_steps")}
    assert "counts" not in next(r for r in summary["rows"] if r["method"] == "sc")
    # an interrupted run: drop the last two lines and cut a third in half
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:-3]) + "\n" + lines[-3][:10] + "\n")
    run_scale(*args, seed=1, progress=False)
    again = read_results(tmp_path / "results.jsonl")
    keys = [(r["item"], r["method"], r["budget"]) for r in again]
    assert len(set(keys)) == len(rows) and len(keys) == len(rows)
    redone = {k: r for k, r in zip(keys, again, strict=True)}
    for r in rows:  # same seed, same results, resumed or not
        assert redone[(r["item"], r["method"], r["budget"])]["answer"] == r["answer"]
    untimed = lambda s: [{k: v for k, v in r.items() if k != "seconds"} for r in s["rows"]]  # noqa: E731
    # the cut line was redone on a line of its own: every line of the file is a whole row
    assert untimed(json.loads((tmp_path / "summary.json").read_text())) == untimed(summary)


def test_a_failing_item_is_recorded_and_the_run_goes_on(tmp_path, make_process):
    class Broken(OraclePRM):
        def score(self, prompts, partials):
            return [2.0] * len(partials)

    items = load_task("builtin:easy", limit=2)
    summary = run_scale(
        items, ["bon", "sc"], [2], make_process, Broken(), make_checker("builtin"), tmp_path, progress=False
    )
    rows = read_results(tmp_path / "results.jsonl")
    assert all("outside its range" in r["error"] for r in rows if r["method"] == "bon")
    assert all("error" not in r for r in rows if r["method"] == "sc")
    assert {r["method"]: r["errors"] for r in summary["rows"]} == {"bon": 2, "sc": 0}


def test_token_budgets_cap_every_run_and_set_widths_from_a_recorded_calibration(tmp_path, make_process):
    items = load_task("builtin:easy", limit=2)
    args = (items, ["greedy", "sc", "pf"], [8, 24], make_process, OraclePRM(), make_checker("builtin"), tmp_path)
    summary = run_scale(*args, seed=1, progress=False, unit="tokens")
    per_sample = json.loads((tmp_path / "settings.json").read_text())["tokens_per_sample"]
    assert summary["unit"] == "tokens" and summary["tokens_per_sample"] == per_sample > 0
    rows = read_results(tmp_path / "results.jsonl")
    assert len(rows) == 2 * 3 * 2  # in tokens, greedy runs at every budget
    for r in rows:
        assert "error" not in r and 0 < r["generated_tokens"] <= r["budget"]
        assert r["width"] == max(1, int(r["budget"] // per_sample))
    fixed = run_scale(*args[:-1], tmp_path / "fixed", seed=1, progress=False, unit="tokens", tokens_per_sample=4)
    assert fixed["tokens_per_sample"] == 4.0
    assert {r["width"] for r in read_results(tmp_path / "fixed" / "results.jsonl")} == {2, 6}
    with pytest.raises(ConfigError, match="unit"):
        run_scale(*args, unit="flops")


def test_every_run_starts_with_a_cold_scorer_cache(tmp_path, make_process):
    class Cached(OraclePRM):
        clears = 0

        def clear_cache(self):
            self.clears += 1

    scorer = Cached()
    items = load_task("builtin:easy", limit=2)
    run_scale(items, ["pf", "bon"], [1, 2], make_process, scorer, make_checker("builtin"), tmp_path, progress=False)
    assert scorer.clears == 2 * 2 * 2  # items x methods x budgets: no run reuses another's cached prefixes


def test_a_half_written_last_line_is_cut_before_appending(tmp_path, make_process):
    items = load_task("builtin:easy", limit=2)
    args = (items, ["sc"], [1, 2], make_process, OraclePRM(), make_checker("builtin"), tmp_path)
    run_scale(*args, seed=1, progress=False)
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # killed mid-write: no newline
    summary = run_scale(*args, seed=1, progress=False)
    again = path.read_text().splitlines()
    assert len(again) == len(lines) and all(json.loads(x) for x in again)  # the cut row redone on its own line
    assert all(r["items"] == 2 for r in summary["rows"])


def test_settings_are_recorded_and_resuming_with_others_is_refused(tmp_path, make_process):
    items = load_task("builtin:easy", limit=2)
    args = (items, ["sc"], [2], make_process, OraclePRM(), make_checker("builtin"), tmp_path)
    settings = {"task": "builtin:easy", "temperature": 0.8, "max_tokens": 8}
    summary = run_scale(*args, seed=1, progress=False, settings=settings)
    recorded = json.loads((tmp_path / "settings.json").read_text())
    assert recorded == {**settings, "seed": 1, "budget_unit": "samples"} == summary["settings"]
    with pytest.raises(ConfigError, match="holds a run with --temperature 0.8, this one has 1.5"):
        run_scale(*args, seed=1, progress=False, settings={**settings, "temperature": 1.5})
    with pytest.raises(ConfigError, match="--seed 1, this one has 7"):
        run_scale(*args, seed=7, progress=False, settings=settings)
    with pytest.raises(ConfigError, match="--max-tokens 8, this one has 16"):
        run_scale(*args, seed=1, progress=False, settings={**settings, "max_tokens": 16})
    run_scale(*args, seed=1, progress=False, settings=settings)  # the same settings resume
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.jsonl").write_text('{"item": "easy-0", "method": "sc", "budget": 2, "correct": true}\n')
    with pytest.raises(ConfigError, match="no settings.json"):
        run_scale(*args[:-1], old, seed=1, progress=False, settings=settings)


def test_the_summary_counts_only_this_runs_items_and_greedy_runs_once_at_budget_1(tmp_path, make_process):
    items = load_task("builtin:easy", limit=3)
    args = (["greedy", "sc"], [2, 4], make_process, OraclePRM(), make_checker("builtin"), tmp_path)
    run_scale(items, *args, seed=1, progress=False)
    rows = read_results(tmp_path / "results.jsonl")
    assert sorted({(r["method"], r["budget"]) for r in rows}) == [("greedy", 1), ("sc", 2), ("sc", 4)]
    summary = run_scale(items[:2], *args, seed=1, progress=False)  # --limit 2 after --limit 3
    assert summary["items"] == 2 and all(r["items"] == 2 for r in summary["rows"])
    assert [(r["method"], r["budget"]) for r in summary["rows"]] == [("greedy", 1), ("sc", 2), ("sc", 4)]
    assert len(read_results(tmp_path / "results.jsonl")) == len(rows)  # nothing redone, nothing dropped
