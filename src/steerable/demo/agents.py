"""The agents part of the tour: the greedy agent beside tree search over environment states, on hard lookups.

Both run through ``steerable agent scale``'s pieces on the same held-out tasks
(the first ``tasks`` of the hard lookup split, seed 0), so a row here is the
same experiment as the 50-task table of the results page
(``docs/results/agents.md``: greedy 0.34, tree c=4 with the oracle 0.88).
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def agents_demo(con: Console, tasks: int = 12, budget: int = 4) -> list[dict]:
    """Greedy and ``tree`` (node budget ``budget``, exact on-track value) on ``tasks`` hard lookups; their rows."""
    from steerable.agents.process import AgentProcess, episode
    from steerable.agents.registry import make_method, make_value
    from steerable.bench.agent_scale import run_agent_scale
    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.tasks.agent.data import split_tasks

    con.rule(f"agents: tree search over environment states, {tasks} hard lookups")
    gen = LocalGenerator.from_pretrained("builtin:agent", device="cpu", chat_template="never")

    def make(greedy: bool) -> AgentProcess:
        return AgentProcess(gen, SamplingParams(temperature=0.0) if greedy else SamplingParams(1.0, top_p=0.95))

    items = split_tasks("lookup", "hard", tasks)
    rows = run_agent_scale(items, ["greedy", "tree"], [budget], make, make_value("oracle"), None)["rows"]
    table = Table()
    for col in ("method", "success", "real steps", "env steps (all copies)", "generated tokens"):
        table.add_column(col)
    for r in rows:
        table.add_row(f"{r['method']} (c={r['budget']})" if r["method"] == "tree" else r["method"],
                      f"{r['success']:.2f} ± {r['success_se']:.2f}", f"{r['real_steps']:.1f}",
                      f"{r['env_steps']:.1f}", f"{r['generated_tokens']:.0f}")  # fmt: skip
    con.print(table)
    cond = episode(items[0])
    _, tree = make_method("tree")
    searched = tree.run(make(False), make_value("oracle"), budget, cond, seed=0).text
    con.print(f"[dim]the first task, searched:[/]\n{escape(cond.prompt + searched)}")
    con.print("[dim]50 tasks (docs/results/agents.md): greedy 0.34, tree c=4 0.88, at the same cap on real steps[/]")
    return rows
