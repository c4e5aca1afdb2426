"""What ``steerable agent run`` and ``steerable agent scale`` take, as config dataclasses (light: the CLI imports
them to make its flags)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from steerable.config import check, distinct, opt

ENVS = ("builtin:calculator", "builtin:lookup", "builtin:maze", "builtin:chains")


@dataclass(frozen=True)
class AgentModel:
    """The model that acts, and how it samples."""

    model: str = opt("builtin:agent", "Model directory, builtin:agent, or builtin (the arithmetic model, which "
                     "aries and static need on the chains).", min_len=1)  # fmt: skip
    device: str = opt("auto", "cpu, cuda, cuda:N or auto.", min_len=1)
    temperature: float = opt(1.0, "Sampling temperature of the searching methods (greedy uses 0).", gt=0, le=10)
    top_p: float = opt(0.95, "Nucleus mass of the searching methods (Koh et al.'s 0.95).", gt=0, le=1)
    fork: Literal["clone", "replay"] = opt("clone", "How rows fork their environment: clone(), or reset and replay.")
    max_turns: int = opt(32, "Turns an episode may take at most.", ge=1, le=512)


@dataclass(frozen=True)
class AgentTasks:
    """Which tasks: a built-in split, or a JSONL file of task objects."""

    env: Literal[ENVS] = opt("builtin:lookup", "The environment of the built-in split.")  # type: ignore[valid-type]
    split: Literal["easy", "hard"] = opt("hard", "The built-in split.")
    task: Path | None = opt(None, 'A JSONL file of task objects ({"env": "lookup", ...}; see the agents guide).')
    limit: int = opt(50, "Tasks to run.", ge=1, le=100_000)
    tools: Literal["on", "off"] = opt("on", "off: pose the task without its tool (the calculator's text-only form).")


@dataclass(frozen=True)
class AgentScaleConfig:
    """What ``steerable agent scale`` measures."""

    methods: tuple[str, ...] = opt(("greedy", "bon", "tree"), "Comma-separated methods.", min_len=1, min_items=1)
    budgets: tuple[int, ...] = opt((4, 8), "Comma-separated budgets (what each counts: --help).", ge=1, le=4096,
                                   min_items=1)  # fmt: skip
    value: str = opt("oracle", "Value function of bon and tree: oracle (exact, on track), head (the learned value "
                     "head shipped with builtin:agent) or head:DIR.", min_len=1)  # fmt: skip
    seed: int = opt(0, "Same seed, same results.", ge=0, lt=2**32)
    out: Path | None = opt(None, "Directory for results.jsonl and summary.json; a rerun resumes.")

    def __post_init__(self) -> None:
        check(self)
        distinct(self, "methods", "budgets")


@dataclass(frozen=True)
class AgentRunConfig:
    """What ``steerable agent run`` runs on each task."""

    method: str = opt("greedy", "A method (greedy, bon, tree; options after the name: tree:branching=3).", min_len=1)
    budget: int = opt(8, "Its budget (what it counts: steerable agent scale --help).", ge=1, le=4096)
    value: str = opt("oracle", "Value function of bon and tree: oracle, head or head:DIR.", min_len=1)
    seed: int = opt(0, "Same seed, same transcripts.", ge=0, lt=2**32)
