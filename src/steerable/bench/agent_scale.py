"""``steerable agent scale``: success against compute for agent methods, one row per (task, method, budget).

The methods are a table (:data:`steerable.agents.registry.METHODS`, the same :class:`~steerable.registry.Registry`
as the other families): ``greedy`` (one episode at temperature 0), ``bon``
(N episodes at temperature 1 in copies of the environment, the one the value
function rates best committed) and ``tree`` (best-first search over
environment states with node budget N). Runs write ``results.jsonl`` as they
go (a rerun with the same ``--out`` resumes) and ``summary.json``; the summary
rows carry ``method, budget, items, success, success_se`` and the mean cost per
task: generated tokens, environment steps (every copy's), real steps (the
committed trajectory's), tool calls, environment tokens, seconds.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from steerable.agents.process import AgentProcess, episode
from steerable.agents.registry import is_greedy, make_method, needs_value
from steerable.bench.report import ProgressLines
from steerable.bench.scale import cut_partial_line, read_results
from steerable.errors import ConfigError, SteerableError
from steerable.search.best_of_n import Greedy
from steerable.search.registry import parse_method
from steerable.streams import item_seed
from steerable.tasks.agent.envs import replay

#: the cost a summary row averages per task
COST = ("generated_tokens", "env_steps", "real_steps", "tool_calls", "env_tokens", "seconds")


def run_one(method, process: AgentProcess, value, task: dict, budget: int, seed: int, tools: bool) -> dict:
    """One (task, method, budget): the results row."""
    t0 = time.perf_counter()
    row: dict[str, Any] = {}
    try:
        cond = episode(task, tools=tools, codec=process.codec)
        res = method.run(process, value, budget, cond, seed=seed)
        final = replay(cond.env, res.text or "")
        row.update(
            success=final.solved,
            answer=res.answer,
            generated_tokens=res.cost.generated_tokens,
            env_steps=res.cost.env_steps,
            real_steps=final.steps,  # the committed trajectory's steps, as real_steps() counts them
            tool_calls=res.cost.tool_calls,
            env_tokens=res.cost.env_tokens,
            seconds=res.cost.seconds,
        )
        if res.info.get("counts"):
            row["counts"] = res.info["counts"]
    except SteerableError as e:  # one bad task is recorded, the run goes on
        row.update(error=str(e), success=False, seconds=round(time.perf_counter() - t0, 4))
    return row


def summarise(rows: list[dict], methods: Sequence[str], budgets: Sequence[int]) -> list[dict]:
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["budget"])].append(r)
    out = []
    for m in methods:
        for b in [1] if is_greedy(parse_method(m)[0] if ":" in m else m) else budgets:
            rs = groups.get((m, b), [])
            if not rs:
                continue
            ok = [r for r in rs if "error" not in r]
            p = sum(bool(r["success"]) for r in rs) / len(rs)
            counts: dict[str, int] = defaultdict(int)
            for r in ok:
                for k, v in r.get("counts", {}).items():
                    counts[k] += v
            out.append(
                {
                    "method": m,
                    "budget": b,
                    "items": len(rs),
                    "errors": len(rs) - len(ok),
                    "success": round(p, 4),
                    "success_se": round(math.sqrt(p * (1 - p) / len(rs)), 4),
                    **{k: round(sum(r.get(k, 0) for r in ok) / max(len(ok), 1), 2) for k in COST},
                    **({"counts": dict(counts)} if counts else {}),
                }
            )
    return out


def run_agent_scale(
    tasks: Sequence[dict],
    methods: Sequence[str],
    budgets: Sequence[int],
    make_process: Callable[[bool], AgentProcess],
    value,
    out: Path | None,
    seed: int = 0,
    tools: bool = True,
    progress: bool = False,
) -> dict:
    """Every (task, method, budget) once, written to ``out/results.jsonl`` as it goes (resumable); the summary."""
    built = {m: make_method(m) for m in methods}
    for m, (name, _) in built.items():
        if needs_value(name) and value is None:
            raise ConfigError(f"--methods {m} needs a value function: pass --value oracle")
    done: dict[tuple, dict] = {}
    results = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        results = out / "results.jsonl"
        cut_partial_line(results)
        done = {(r["item"], r["method"], r["budget"]): r for r in read_results(results)}
    jobs = [(i, m, b) for m in methods for b in ([1] if is_greedy(built[m][0]) else budgets) for i in range(len(tasks))]
    procs = {True: make_process(True), False: make_process(False)}  # greedy decoding, sampling
    rows = [done[(str(i), m, b)] for i, m, b in jobs if (str(i), m, b) in done]
    todo = [(i, m, b) for i, m, b in jobs if (str(i), m, b) not in done]
    with ProgressLines("agent episodes", len(jobs), len(jobs) - len(todo)) if progress else _Null() as shown:
        for i, m, b in todo:
            name, method = built[m]
            row = {"item": str(i), "method": m, "budget": b, "env": tasks[i].get("env")}
            greedy = is_greedy(name)
            row.update(
                run_one(method, procs[greedy], None if greedy else value, tasks[i], b, item_seed(seed, i), tools)
            )
            rows.append(row)
            if results is not None:
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            shown.add(row)
    summary = {"rows": summarise(rows, methods, budgets)}
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None: ...

    def add(self, row: dict) -> None: ...


def greedy_success(generator, n: int = 50, seed: int = 0, envs: Sequence[str] | None = None) -> dict[str, float]:
    """Greedy success of a model on ``n`` held-out tasks of every environment (or of ``envs``) and split (with its
    tool)."""
    from steerable.lm.types import SamplingParams
    from steerable.tasks.agent.data import SPLIT_MAKERS, SPLITS, split_tasks

    proc = AgentProcess(generator, SamplingParams(temperature=0.0))
    out = {}
    for env in envs or SPLIT_MAKERS:
        for split in SPLITS:
            tasks = split_tasks(env, split, n, seed=seed)
            rows = [run_one(Greedy(), proc, None, t, 1, 0, True) for t in tasks]
            out[f"{env}_{split}"] = round(sum(r["success"] for r in rows) / n, 3)
    return out
