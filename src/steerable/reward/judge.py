"""Language models as judges: a plain LLM-as-judge, and a generative reward model with voting.

:class:`GenerativeRewardModel` follows "Inference-Time Scaling for Generalist
Reward Modeling" (DeepSeek-GRM): sample ``k`` critiques, each ending in a
score; parse the scores and average them (voting). With a ``meta`` scorer,
each critique is rated first and only the ``keep`` best vote (the paper's
meta RM guided voting). An :class:`LLMJudge` is the k = 1, greedy case.
Scores are mapped from [1, ``scale``] to [0, 1]; a critique whose score
cannot be parsed does not vote, and when none can, the result is 0.5.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from steerable.errors import ConfigError
from steerable.lm.types import SamplingParams

CRITIQUE = (
    "Question:\n{prompt}\n\nAnswer:\n{answer}\n\n"
    "Critique the answer step by step against the question, then rate it from 1 (wrong) to {scale} (correct) "
    "on a last line of the form 'Score: N'.\n"
)
#: the template for a meta scorer: {prompt} is the question, {answer} the critique to rate
META = (
    "Question:\n{prompt}\n\nCritique:\n{answer}\n\n"
    "Is this critique careful and correct? Rate it from 1 to {scale} on a last line 'Score: N'.\n"
)
_SCORE = re.compile(r"score\s*[:=]\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_score(text: str, scale: int) -> float | None:
    """The last ``Score: N`` in ``text`` mapped to [0, 1], or None when absent or out of [1, scale]."""
    found = _SCORE.findall(text)
    if not found:
        return None
    v = float(found[-1])
    if not 1 <= v <= scale:
        return None
    return (v - 1) / (scale - 1)


@dataclass
class GenerativeRewardModel:
    generator: object  # anything with generate(prompts, params) -> completions
    k: int = 4
    temperature: float = 0.7
    scale: int = 10
    template: str = CRITIQUE
    meta: GenerativeRewardModel | None = None  # rates critiques (use template=META); only the `keep` best vote
    keep: int = 2
    max_new_tokens: int = 256
    range: tuple[float, float] = (0.0, 1.0)
    calls: int = field(default=0, init=False)
    # its tokens are the generator's: counted in the process's usage when the judge is the policy itself
    forward_tokens: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.k < 1 or self.scale < 2:
            raise ConfigError(f"need k >= 1 and scale >= 2 (got k={self.k}, scale={self.scale})")
        if self.meta is not None and not 1 <= self.keep <= self.k:
            raise ConfigError(f"keep must be in [1, k={self.k}] (got {self.keep})")

    def critiques(self, prompts: Sequence[str], partials: Sequence[str]) -> list[list[str]]:
        params = SamplingParams(
            temperature=0.0 if self.k == 1 else self.temperature, n=self.k, max_new_tokens=self.max_new_tokens
        )
        asks = [
            self.template.format(prompt=p, answer=a, scale=self.scale) for p, a in zip(prompts, partials, strict=True)
        ]
        comps = self.generator.generate(asks, params)
        self.calls += 1
        out: list[list[str]] = [[] for _ in asks]
        for c in comps:
            out[c.prompt_index].append(c.text)
        return out

    def score(self, prompts: Sequence[str], partials: Sequence[str]) -> list[float]:
        results = []
        for prompt, crits in zip(prompts, self.critiques(prompts, partials), strict=True):
            votes = [(c, parse_score(c, self.scale)) for c in crits]
            votes = [(c, s) for c, s in votes if s is not None]
            if self.meta is not None and votes:
                quality = self.meta.score([prompt] * len(votes), [c for c, _ in votes])
                ranked = sorted(zip(quality, votes, strict=True), key=lambda x: -x[0])[: self.keep]
                votes = [v for _, v in ranked]
            results.append(sum(s for _, s in votes) / len(votes) if votes else 0.5)
        return results


def LLMJudge(generator, scale: int = 10, template: str = CRITIQUE, **kw) -> GenerativeRewardModel:  # noqa: N802
    """A single greedy critique and its score."""
    return GenerativeRewardModel(generator, k=1, scale=scale, template=template, **kw)
