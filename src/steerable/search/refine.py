"""Iterative refinement with a verifier (IAD, "Review, Refine, Repeat").

Each round samples ``per_round`` candidates, scores them, and feeds the best
one back:

- ``feedback="prompt"`` (the paper's form, for instruction-following models):
  the next round's prompt carries the best candidate and its score through
  ``template``.
- ``feedback="prefix"`` (for models that were never taught to read feedback,
  such as the built-in one): the next round continues from the best
  candidate's steps up to, not including, the first step whose PRM score falls
  below ``keep_threshold`` — the verifier's review decides what is kept.

Rounds continue until ``budget`` candidates have been sampled; the best-scored
candidate of all rounds is the answer.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Literal

from steerable.config import check, opt
from steerable.errors import ConfigError
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, no_answer, require, run_to_end
from steerable.search.process import Process
from steerable.search.result import Candidate, Result
from steerable.streams import derive_seed

TEMPLATE = "{prompt}\nA previous attempt (verifier score {score:.2f}):\n{attempt}\n\nWrite an improved answer.\n"
#: what a template may name: ``{prompt}``, ``{attempt}`` and ``{score}`` (also as ``{score:.Nf}``, N a digit)
PLACEHOLDERS = ("prompt", "score", "attempt")


def check_template(template: str) -> None:
    """Refuse a template that is not text with the named :data:`PLACEHOLDERS` (no attributes, indices, positions)."""
    hint = "use only {prompt}, {attempt}, {score} or {score:.2f}, and {{ }} for literal braces"
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"refine: template is not a valid template ({e}): {hint}") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        simple_spec = not spec or (
            name == "score" and len(spec) == 3 and spec[0] == "." and spec[1].isdigit() and spec[2] in "fge"
        )
        if name not in PLACEHOLDERS or conversion is not None or not simple_spec:
            shown = "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
            raise ConfigError(f"refine: template placeholder {shown[:40]!r} is not allowed: {hint}")


@dataclass(frozen=True)
class IterativeRefine:
    per_round: int = opt(4, "Candidates sampled per round.", ge=1, le=1024)
    feedback: Literal["prompt", "prefix"] = opt("prefix", "How the best candidate is fed back.")
    keep_threshold: float = opt(0.5, "prefix: keep steps up to the first scored below this.", ge=0.0, le=1.0)
    delimiter: str = opt("\n", "How steps are split when keeping a prefix.")
    template: str = opt(TEMPLATE, "prompt: the next round's prompt, with {prompt}, {attempt} and {score}.")
    extract: Extract = no_answer
    name = "refine"

    def __post_init__(self) -> None:
        check(self, "refine: ")
        if not self.delimiter:
            raise ConfigError("refine: delimiter must be a non-empty string (got '')")
        check_template(self.template)

    def run(self, process: Process, scorer: Scorer, budget: int, prompt: str, seed: int | None = None) -> Result:
        require(budget, scorer, "refine")
        meter = Meter(process, scorer)
        pool: list[tuple[str, float]] = []
        cur_prompt, prefix, rounds = prompt, "", 0
        while len(pool) < budget:
            k = min(self.per_round, budget - len(pool))
            sub = seed if seed is None or rounds == 0 else derive_seed(seed, "refine-round", rounds)
            state = process.init(cur_prompt + prefix, k, sub)
            samples = process.preview(run_to_end(process, state))
            if not all(isinstance(t, str) for t in samples):
                raise ConfigError(
                    f"refine feeds text back into the prompt: {type(process).__name__} has no text samples"
                )
            texts = [prefix + t for t in samples]
            scores = checked_scores(scorer, [prompt] * k, texts)
            pool += list(zip(texts, scores, strict=True))
            rounds += 1
            best_text, best_score = max(pool, key=lambda x: x[1])
            if self.feedback == "prompt":
                cur_prompt = self.template.format(prompt=prompt, score=best_score, attempt=best_text)
            else:
                prefix = self._kept_prefix(scorer, prompt, best_text)
        pick = max(range(len(pool)), key=lambda i: pool[i][1])
        cands = tuple(Candidate(t, self.extract(t), s, float(i == pick)) for i, (t, s) in enumerate(pool))
        return Result(self.name, budget, pool[pick][0], cands[pick].answer, cands, meter.cost(), {"rounds": rounds})

    def _kept_prefix(self, scorer: Scorer, prompt: str, text: str) -> str:
        steps = [s + self.delimiter for s in text.split(self.delimiter)[:-1]]
        if not steps:
            return ""
        prefixes = ["".join(steps[: i + 1]) for i in range(len(steps))]
        scores = checked_scores(scorer, [prompt] * len(prefixes), prefixes)
        keep = next((i for i, s in enumerate(scores) if s < self.keep_threshold), len(steps))
        return "".join(steps[:keep])
