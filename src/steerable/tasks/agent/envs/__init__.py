"""The environments of the built-in agent world: plain Python objects a language model acts in.

Every environment reads the model's text one line at a time. :meth:`AgentEnv.step`
returns an :class:`Observation` when the line was an action (the process then
writes ``text`` into the context, on its own line) and ``None`` for any other
line (reasoning). An answer line ``A: ...`` ends the episode. Each environment
is deterministic and :meth:`AgentEnv.clone` copies its whole state, so a search
can fork it; :func:`replay` rebuilds a state from a transcript (the
reset-and-replay of Koh et al.'s tree search) and is also the exact verifier.

=============  ======================  ==============================================
environment    action                  observation
=============  ======================  ==============================================
calculator     ``>>> 37*48``           ``= 1776``
lookup         ``get k3``              ``= k7`` / ``= k7 k2`` / ``= 42`` / ``= none``
maze           ``go u`` (u d l r)      ``= 2,3`` / ``= wall`` / ``= goal``
chains         ``next``                ``= +48-19*3`` (the next three operations) / ``= end``
=============  ======================  ==============================================

A task is a JSON object (:mod:`steerable.tasks.agent.data` writes the built-in
splits in this format; ``--task FILE.jsonl`` reads it). Every episode has a
cap on environment steps (``max_steps``); an action past it is answered
``= out of steps`` and ends the episode unsolved.
"""

from __future__ import annotations

from steerable.errors import InputError
from steerable.tasks.agent.envs.base import ANSWER, OUT_OF_STEPS, AgentEnv, Observation
from steerable.tasks.agent.envs.calculator import Calculator
from steerable.tasks.agent.envs.chains import CHUNK, Chains, chain_ops, feedback_line, review, running_values
from steerable.tasks.agent.envs.lookup import Lookup, live_path
from steerable.tasks.agent.envs.maze import MOVES, Maze, distances

__all__ = [
    "ANSWER",
    "CHUNK",
    "ENVS",
    "MOVES",
    "OUT_OF_STEPS",
    "AgentEnv",
    "Calculator",
    "Chains",
    "Lookup",
    "Maze",
    "Observation",
    "chain_ops",
    "distances",
    "feedback_line",
    "live_path",
    "make_env",
    "replay",
    "review",
    "running_values",
]

ENVS: dict[str, type[AgentEnv]] = {e.name: e for e in (Calculator, Lookup, Maze, Chains)}


def make_env(name: str) -> AgentEnv:
    """A fresh environment by name (``calculator``, ``lookup``, ``maze``, ``chains``; ``builtin:`` optional)."""
    key = name.removeprefix("builtin:")
    if key not in ENVS:
        raise InputError(f"unknown environment {name!r}: use one of {', '.join('builtin:' + k for k in ENVS)}")
    return ENVS[key]()


def replay(env: AgentEnv, text: str) -> AgentEnv:
    """A clone of ``env`` (just reset) after reading the model's part of ``text`` line by line.

    ``text`` is a transcript as the process writes it (the model's lines and
    the observations); observation lines are skipped, since the clone writes
    its own. The clone's ``solved`` is the exact verdict on the transcript.
    """
    out = env.clone()
    for line in text.split("\n"):
        if out.done:
            break
        if line.startswith("= "):
            continue
        out.step(line)
    return out
