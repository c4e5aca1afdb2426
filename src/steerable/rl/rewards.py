"""Reward functions in TRL's signature, built from steerable's checkers and scorers, and prior-prompt templates.

A reward function is ``f(prompts, completions, **columns) -> list[float]``
(TRL passes the dataset's other columns, e.g. ``answer``, as keyword lists).
``--reward exact:1,format:0.2`` combines several with weights (TimeMaster's
composite rewards; TRL sums them with ``reward_weights``).

- ``exact``: 1 if the extracted answer equals the gold answer (the verifier; on
  ``builtin:agent`` tasks the environment's own verdict);
- ``format``: 1 if an answer can be extracted at all;
- ``prm``: the built-in PRM's score of the whole completion;
- ``majority``: TTRL's label-free reward, 1 if the answer equals the
  majority answer of the rollouts of the same prompt.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable

from steerable.errors import ConfigError

# Prior prompt engineering ("Prior Prompt Engineering for Reinforcement Fine-Tuning"): what the training
# prompts ask the model to do before answering.
TEMPLATES = {
    "none": "{prompt}",
    "reasoning": "Reason step by step, then answer.\n{prompt}",
    "planning": "First write a plan, then follow it to the answer.\n{prompt}",
    "code": "Solve it as a program would, one operation per line.\n{prompt}",
    "knowledge": "Recall the facts you need first, then answer.\n{prompt}",
    "null_example": "Example: a question and its answer.\n{prompt}",
}


def apply_template(name: str, prompt: str, tokenizer) -> str:
    if name not in TEMPLATES:
        raise ConfigError(f"unknown prompt template {name!r}: use one of {', '.join(TEMPLATES)}")
    text = TEMPLATES[name].format(prompt=prompt)
    if tokenizer is not None and name != "none":
        back = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"])
        if back != text:
            raise ConfigError(f"template {name!r} cannot be written in this model's vocabulary: use --template none")
    return text


def _named(fn: Callable, name: str) -> Callable:
    fn.__name__ = name  # TRL logs each reward under its function's name
    return fn


def exact_reward(extract: Callable[[str], str | None]) -> Callable:
    def exact(prompts, completions, answer, **_):
        return [
            1.0 if extract(c) is not None and str(extract(c)) == str(a) else 0.0
            for c, a in zip(completions, answer, strict=True)
        ]

    return _named(exact, "exact")


def solved_reward() -> Callable:
    """The agent world's ``exact``: the environment's own exact verifier (the ``solved`` column that agent
    rollouts return), not the text's answer."""

    def exact(prompts, completions, solved, **_):
        return [1.0 if s else 0.0 for s in solved]

    return _named(exact, "exact")


def format_reward(extract: Callable[[str], str | None]) -> Callable:
    def fmt(prompts, completions, **_):
        return [1.0 if extract(c) is not None else 0.0 for c in completions]

    return _named(fmt, "format")


def prm_reward(scorer) -> Callable:
    def prm(prompts, completions, **_):
        return [float(s) for s in scorer.score(list(prompts), list(completions))]

    return _named(prm, "prm")


def majority_reward(extract: Callable[[str], str | None]) -> Callable:
    """TTRL: rollouts of the same prompt vote; each earns 1 if it agrees with the majority (no labels)."""

    def majority(prompts, completions, **_):
        answers = [extract(c) for c in completions]
        by_prompt: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(prompts):
            by_prompt[p if isinstance(p, str) else repr(p)].append(i)
        out = [0.0] * len(completions)
        for rows in by_prompt.values():
            votes = Counter(answers[i] for i in rows if answers[i] is not None)
            if not votes:
                continue
            label = votes.most_common(1)[0][0]
            for i in rows:
                out[i] = 1.0 if answers[i] == label else 0.0
        return out

    return _named(majority, "majority")


def parse_rewards(
    spec: str, extract, scorer_factory: Callable[[], object] | None = None, agent: bool = False
) -> tuple[list, list[float]]:
    """``"exact:1,format:0.2"`` -> (reward functions, weights); ``agent``: ``exact`` is the environment's verifier."""
    funcs, weights = [], []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        name, _, w = part.partition(":")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise ConfigError(f"reward weight must be a number (got {w!r} in {spec!r})") from None
        if not math.isfinite(weight):
            raise ConfigError(f"reward weight must be a finite number (got {w!r} in {spec!r})")
        if name == "exact":
            funcs.append(solved_reward() if agent else exact_reward(extract))
        elif name == "format":
            funcs.append(format_reward(extract))
        elif name == "majority":
            funcs.append(majority_reward(extract))
        elif name == "prm":
            if agent:
                raise ConfigError("the prm reward scores arithmetic solutions: agent tasks use exact and format")
            if scorer_factory is None:
                raise ConfigError("the prm reward needs a PRM: use the built-in model")
            funcs.append(prm_reward(scorer_factory()))
        else:
            raise ConfigError(f"unknown reward {name!r}: use exact, format, prm or majority (name:weight, ...)")
        weights.append(weight)
    if not funcs:
        raise ConfigError("no reward given: e.g. --reward exact")
    return funcs, weights
