"""The diffusion part of the tour: FK steering beside best-of-N on digit targets, at equal NFE, the samples drawn.

Target i is digit i mod 10 with seed i, as ``benchmarks/diffusion_steering.py``
runs them, so the figure on 200 targets shipped beside the model
(``builtin/digits/steering.json``) is the same experiment, larger.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from steerable.demo.extras import missing_extra

#: (registry name, label): the two strategies, at equal budget
METHODS = (("bon", "best-of-{n}"), ("fk", "FK ({n} particles)"))
#: cells of the terminal view per line: an 8-pixel image and a gap of 2
PER_LINE = 8


@dataclass(frozen=True)
class Pick:
    """One run's answer: what the judge read in it, its reward, the NFE its cost counted."""

    target: str
    answer: str | None
    reward: float
    nfe: int
    sample: torch.Tensor  # [64], pixels in [-1, 1]

    @property
    def accepted(self) -> bool:
        return self.answer == self.target


def diffusion_demo(
    con: Console, out: Path, targets: int = 8, budget: int = 4, steps: int = 50
) -> dict[str, list[Pick]] | None:
    """Best-of-``budget`` and FK with ``budget`` particles on ``targets`` digit targets; returns each method's
    picks (None without the [diffusion] extra). Writes ``out/digits.png``."""
    missing = missing_extra("diffusion", ("diffusers", "sklearn"), "the diffusion section")
    if missing:
        con.print(f"[yellow]{escape(missing)}[/]")
        return None
    from steerable.diffusion.digits import BUILTIN, judge
    from steerable.diffusion.registry import make_strategy
    from steerable.diffusion.worlds import load_world

    world = load_world("builtin:digits")
    process = world.process(num_steps=steps)  # DDIM, eta 1: the stochastic sampler FK resamples
    con.rule(f"diffusion: digits steered to a target, {budget} samples x {steps} steps a run")
    picks: dict[str, list[Pick]] = {}
    for name, _ in METHODS:
        strategy = make_strategy(name, judge().answer)
        picks[name] = []
        for i in range(targets):
            target = str(i % 10)
            res = strategy.run(process, world.reward, budget, target, seed=i)
            reward = world.reward.score([target], res.sample[None])[0]
            picks[name].append(Pick(target, res.answer, reward, res.cost.nfe, torch.as_tensor(res.sample).reshape(64)))
    labels = {name: label.format(n=budget) for name, label in METHODS}
    table = Table()
    table.add_column("target")
    for name, _ in METHODS:
        for col in ("judge reads", "reward", "NFE"):
            table.add_column(f"{labels[name]}: {col}" if col == "judge reads" else col)
    for i in range(targets):
        cells = [picks["bon"][i].target]
        for name, _ in METHODS:
            p = picks[name][i]
            mark = "[green]ok[/]" if p.accepted else "[red]no[/]"
            cells += [f"{p.answer} {mark}", f"{p.reward:.2f}", str(p.nfe)]
        table.add_row(*cells)
    con.print(table)
    counts = {name: sum(p.accepted for p in picks[name]) for name, _ in METHODS}
    con.print(
        "  judge accepted: " + ", ".join(f"{labels[name]} {counts[name]} of {targets}" for name, _ in METHODS)
        + "\n  (the judge is an SVC the reward model never saw; reward = log p(target) by the\n"
        "  reward model; NFE = denoiser calls, read from each run's cost)"
    )  # fmt: skip
    for line in drawing(picks, labels):
        con.print(line, highlight=False, crop=False, overflow="ignore")
    path = out / "digits.png"
    draw(picks, labels, path)
    con.print("  the answers with their rewards:")
    con.print(f"    {path}", highlight=False, soft_wrap=True)
    measured = measured_digits(BUILTIN / "steering.json", budget) or f"No 200-target record at {budget} ships."
    con.print(f"[dim]{targets} targets are noisy. {measured}[/]")
    return picks


def blocks(sample: torch.Tensor) -> list[str]:
    """An 8x8 image as 4 lines of 8 half-block characters (a pixel is ink above the middle grey)."""
    ink = (sample.reshape(8, 8) > 0).tolist()
    glyph = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}
    return ["".join(glyph[ink[r][c], ink[r + 1][c]] for c in range(8)) for r in range(0, 8, 2)]


def drawing(picks: dict[str, list[Pick]], labels: dict[str, str]) -> list[str]:
    """The chosen samples in the terminal: per method a line of images, the judge's reading under each."""
    lines = []
    targets = len(next(iter(picks.values())))
    for start in range(0, targets, PER_LINE):
        cells = range(start, min(start + PER_LINE, targets))
        lines.append("  " + "".join(f"target {picks['bon'][i].target:<3}" for i in cells).rstrip())
        for name, _ in METHODS:
            row = [picks[name][i] for i in cells]
            lines.append(f"  {labels[name]}, the judge's reading under each:")
            art = [blocks(p.sample) for p in row]
            lines += ["  " + "  ".join(a[r] for a in art) for r in range(4)]
            lines.append("  " + "".join(f"{p.answer} {'ok' if p.accepted else 'no':<8}" for p in row).rstrip())
    return lines


def draw(picks: dict[str, list[Pick]], labels: dict[str, str], path: Path) -> None:
    """One row per method, one column per target: each answer titled with the judge's reading and its reward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = len(next(iter(picks.values())))
    fig, axes = plt.subplots(len(picks), targets, figsize=(1.2 * targets + 0.8, 1.5 * len(picks)), squeeze=False)
    for r, (name, row) in enumerate(picks.items()):
        for ax, p in zip(axes[r], row, strict=True):
            ax.imshow(p.sample.reshape(8, 8).clamp(-1, 1).numpy(), cmap="gray_r", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"target {p.target}\njudge {p.answer} {'ok' if p.accepted else 'no'}, r={p.reward:.2f}",
                         fontsize=6, color="green" if p.accepted else "red")  # fmt: skip
        axes[r][0].set_ylabel(labels[name], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measured_digits(record: Path, budget: int) -> str | None:
    """The shipped 200-target figure for ``budget`` (best-of-N and FK judge success), as one line, or None."""
    try:
        rec = json.loads(Path(record).read_text())
        rows = {r["method"]: r for r in rec["rows"] if r["budget"] == budget}
        bon, fk = rows["bon"], rows["fk"]
        return (
            f"Measured on {fk['items']} targets at {budget} ({fk['nfe']:.0f} NFE): judge success best-of-{budget} "
            f"{bon['accuracy']}, FK {fk['accuracy']} (`{rec['command']}`)."
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
