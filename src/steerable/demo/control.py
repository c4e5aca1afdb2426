"""The control part of the tour: V-GPS beside the BC policy it steers, on the same seeded PointNav episodes.

Both run through ``steerable control eval``'s pieces (the registry builds the
controllers, ``evaluate`` runs them), so episode i meets the same start, wind
and gusts under both, and a row here is the same experiment as the 200-episode
figure shipped beside the critic (``builtin/pointnav/critic/steering.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from steerable.demo.extras import missing_extra

ENV = "builtin:pointnav"
#: one character per episode in the terminal view
MARK = {"goal": "✓", "collision": "x", "timeout": "."}  # anything else: ?


def control_demo(con: Console, out: Path, episodes: int = 20, budget: int = 8, seed: int = 0) -> list[dict] | None:
    """Base BC and V-GPS (``budget`` chunks scored by the shipped critic) on ``episodes`` seeded episodes;
    returns their ``summary`` rows (None without the [control] extra). Writes ``out/pointnav-*.png``."""
    missing = missing_extra("control", ("gymnasium", "diffusers"), "the control section")
    if missing:
        con.print(f"[yellow]{escape(missing)}[/]")
        return None
    from steerable.control.evaluate import evaluate, plot, summary
    from steerable.control.registry import EvalConfig, builtin_dir, load_policy, make_controller
    from steerable.control.worlds.envs import make_env

    con.rule(f"control: steering a diffusion policy on PointNav, {episodes} seeded episodes")
    env = make_env(ENV)
    runs = {"base": EvalConfig(env=ENV, method="base", episodes=episodes, seed=seed)}
    runs["vgps"] = EvalConfig(env=ENV, method="vgps", budget=budget, episodes=episodes, seed=seed)
    labels = {"base": "base (BC)", "vgps": f"V-GPS K={budget}"}
    policy = load_policy(runs["base"])  # both steer the same shipped policy
    rows, paths, strips = [], [], []
    table = Table()
    for col in ("method", "success", "return", "NFE / env step", "Q calls / env step"):
        table.add_column(col)
    for name, cfg in runs.items():
        eps = evaluate(env, make_controller(cfg, policy), episodes, seed, progress=False, keep_path=True)
        row = {**summary(name, cfg.budget, eps), "successes": sum(e.success for e in eps)}
        rows.append(row)
        table.add_row(
            labels[name],
            f"{row['successes']} of {episodes}",
            f"{row['return']:.2f}",
            f"{row['nfe_per_step']:.1f}",
            f"{row['scorer_calls_per_step']:.2f}",
        )
        strips.append(f"    {labels[name]:<10} " + "".join(MARK.get(e.outcome, "?") for e in eps))
        path = out / f"pointnav-{name}.png"
        plot(env, eps, path, title=f"{labels[name]}: {row['successes']} of {episodes} episodes reach the goal")
        paths.append(path)
    con.print(table)
    con.print(
        f"  V-GPS samples {budget} chunks from the same policy and runs the one the shipped\n"
        "  critic values most; NFE and Q calls are what the runs counted. Episode by\n"
        "  episode, same starts, winds and gusts for both (✓ goal, x crash, . timeout):"
    )
    for strip in strips:
        con.print(strip, highlight=False, soft_wrap=True)
    con.print("  paths (green: goal reached, red: not):")
    for path in paths:
        con.print(f"    {path}", highlight=False, soft_wrap=True)
    measured = measured_control(builtin_dir(ENV, "critic") / "steering.json", budget)
    measured = measured or f"No 200-episode record at K = {budget} ships with the critic."
    con.print(f"[dim]{episodes} episodes are noisy. {measured}[/]")
    return rows


def measured_control(record: Path, budget: int) -> str | None:
    """The shipped 200-episode success of base BC and V-GPS at ``budget``, as one line, or None."""
    try:
        rec = json.loads(Path(record).read_text())
        rows = {r["entry"]: r for r in rec["rows"]}
        base, vgps = rows["base"], rows[f"vgps:{budget}"]
        return (
            f"Measured on {base['episodes']} episodes: success base {base['success']:.3f}, V-GPS K = {budget} "
            f"{vgps['success']:.3f} (`{rec['command']}`)."
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
