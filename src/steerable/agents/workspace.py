"""IterResearch's Markovian workspace (Chen et al., 2025): each round starts from the question, the evolving
report and the last action with its observation only, never the growing transcript.

A round's state is ``s_t = (q, M_t, a_{t-1}, o_{t-1})``; the model writes its
reasoning, the next report ``M_{t+1}`` and an action ``a_t``, and the next
round's context is rebuilt from these, so it stays the same size however long
the work. On the built-in chains environment the report is the running value
(``S: n``) and the action ``next``; the workspace is
:func:`steerable.tasks.agent.data.workspace`, the format the agent model was
trained on beside the growing transcript (``transcript``: the plain agent
process, every round appended to one context).

Each round is one turn of the agent process conditioned on the round's own
:class:`~steerable.agents.process.Episode`: the environment as the last round
left it and the rebuilt workspace. The result's text is the rounds' texts
joined, which the environment replays to its verdict. Where this differs from
the paper: the report is one line (the chain's running value) instead of a
free-form report, and the policy is the built-in model rather than a
research agent; the interaction-scaling comparison (accuracy against chain
length) is the paper's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from steerable.agents.process import Episode, answer_of
from steerable.config import check, opt
from steerable.errors import ConfigError
from steerable.search.base import Extract, Meter
from steerable.search.result import Candidate, Result
from steerable.streams import derive_seed
from steerable.tasks.agent.data import workspace

_REPORT = re.compile(r"^S:\s*(-?\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class MarkovianWorkspace:
    """Rounds from a rebuilt workspace (question, report, last action and observation); the budget is unused."""

    extract: Extract = answer_of
    max_rounds: int = opt(24, "Rounds at most (a round reads up to three operations).", ge=1, le=256)
    name = "workspace"

    def __post_init__(self) -> None:
        check(self)

    def run(self, process, scorer, budget: int, cond: Episode, seed: int | None = None) -> Result:
        if cond.env.name != "chains":
            raise ConfigError(f"workspace runs the chains environment (its report is the running value), not "
                              f"{cond.env.name}: use --env builtin:chains")  # fmt: skip
        meter = Meter(process, None)
        env, report, last, text, rounds = cond.env.clone(), cond.env.task["start"], None, "", 0
        while not env.done and rounds < self.max_rounds:
            round_cond = Episode(env, workspace(env.task, report, last))
            state = process.init(round_cond, 1, derive_seed(seed, rounds) if seed is not None else None)
            process.propose(state)
            new, env = process.preview(state)[0], state.envs[0]
            text += new
            rounds += 1
            reports = _REPORT.findall(new)
            if reports:
                report = int(reports[-1])
            observed = [ln for ln in new.split("\n") if ln.startswith("= ")]
            last = observed[-1] if observed else last
            if process.is_terminal(state)[0] and not env.done:
                break  # the model ended (EOS) without an answer: the episode is over
        ans = self.extract(text)
        cands = (Candidate(text, ans, float("nan"), 1.0),)
        return Result(self.name, budget, text, ans, cands, meter.cost(), {"counts": {"rounds": rounds}})
