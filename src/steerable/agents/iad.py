"""Iterative agent decoding with the environment's feedback ("Review, Refine, Repeat", 2025), and the same loop
without the feedback (``resample``), which separates what the feedback adds from what more samples add.

Each call samples one whole episode. After a call the environment reviews the
candidate; the next call's prompt shows the best and the worst candidate so far
with that review, and the model writes a new candidate; the best one (by the
environment's score) is kept. ``resample`` runs the same calls from the plain
prompt. Both stop once the environment says a candidate solved the task (the
environment's reward is the feedback the paper's WebShop runs read), so the
count of calls used is part of the row (``counts.calls``).

In the built-in world the environment is the chains of IterResearch's
workspace: its review is the reports a candidate wrote (``S: n`` after every
round of three operations) and how many are right before the first wrong one
(:func:`~steerable.tasks.agent.envs.review`), shown as ``best 2/4: 576 568
640``. The model reads this format because ``builtin:agent-plan`` was trained
on it (:func:`~steerable.tasks.agent.data.iad_demo`: simulated earlier
candidates and the right transcript), as the paper's LLM reads its feedback
from instructions. Where this differs from the paper: a candidate is shown by
its reports rather than its whole text (the char model's context), and the
score is the environment's (the paper's verifiers score Sketch2Code and
Text2SQL candidates; WebShop's is its environment's reward, as here).
"""

from __future__ import annotations

from dataclasses import dataclass

from steerable.agents.process import Episode, LineCodec, answer_of
from steerable.config import check, opt
from steerable.errors import ConfigError
from steerable.search.base import Extract, Meter, run_to_end
from steerable.search.result import Candidate, Result
from steerable.streams import derive_seed
from steerable.tasks.agent.envs import feedback_line, replay, review


@dataclass(frozen=True)
class IterativeAgentDecoding:
    """Up to ``budget`` episodes, each prompted with the best and worst earlier candidate and the environment's
    review of them (``feedback=False``: the plain prompt every time); the best candidate is committed."""

    extract: Extract = answer_of
    feedback: bool = opt(True, "Show the best and worst candidate so far (False: resample without feedback).")
    stop_solved: bool = opt(True, "Stop once the environment says a candidate solved the task.")

    def __post_init__(self) -> None:
        check(self)

    @property
    def name(self) -> str:
        return "iad" if self.feedback else "resample"

    def run(self, process, scorer, budget: int, cond: Episode, seed: int | None = None) -> Result:
        if budget < 1:
            raise ConfigError(f"{self.name}: budget must be >= 1 call (got {budget})")
        if cond.env.name != "chains":
            raise ConfigError(f"{self.name} reads the chains environment's review of a candidate, not "
                              f"{cond.env.name}'s: use --env builtin:chains")  # fmt: skip
        if not isinstance(process.codec, LineCodec):
            raise ConfigError(f"{self.name} writes its review in the built-in model's lines: use the line codec")
        meter = Meter(process, None)
        task = cond.env.task
        best = worst = None  # (score, call, text, review)
        calls = shown = 0
        for call in range(budget):
            prompt = cond.prompt
            if self.feedback and best is not None:
                shown += 1
                reviewed = [("best", best[3])] + ([("worst", worst[3])] if worst[1] != best[1] else [])
                prompt += "".join(feedback_line(label, *fb) + "\n" for label, fb in reviewed)
            state = process.init(Episode(cond.env, prompt), 1, derive_seed(seed, call) if seed is not None else None)
            state = run_to_end(process, state)
            text = process.preview(state)[0]
            calls += 1
            fb = review(task, text)
            solved = replay(cond.env, text).solved
            score = 1.0 if solved else fb[0] / max(fb[1], 1)
            if best is None or score > best[0]:
                best = (score, call, text, fb)
            if worst is None or score < worst[0]:
                worst = (score, call, text, fb)
            if solved and self.stop_solved:
                break
        assert best is not None
        text = best[2]
        ans = self.extract(text)
        cands = (Candidate(text, ans, best[0], 1.0),)
        counts = {"calls": calls, "feedback_shown": shown, "best_call": best[1]}
        return Result(self.name, budget, text, ans, cands, meter.cost(), {"counts": counts})
