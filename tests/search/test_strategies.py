import math

import pytest

from conftest import tiny_model
from steerable.errors import ConfigError
from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams
from steerable.reward.scorer import ScorerError
from steerable.search.lm_process import LMProcess
from steerable.search.registry import METHODS, UNSCORED, make_scorer, make_strategy
from steerable.tasks.builtin.arithmetic import Problem
from steerable.tasks.builtin.verifier import OraclePRM

PROMPT = Problem((12, 30), ("+",)).prompt


@pytest.fixture(scope="module")
def process(char_tokenizer):
    gen = LocalGenerator(tiny_model("llama", char_tokenizer), char_tokenizer)
    return LMProcess(
        gen, delimiter="\n", params=SamplingParams(temperature=1.0), max_step_tokens=6, max_steps=3, max_tokens=18
    )


class Spy(OraclePRM):
    """The oracle, remembering how many partials it scored."""

    def __init__(self):
        super().__init__()
        self.seen = 0

    def score(self, prompts, partials):
        self.seen += len(partials)
        return super().score(prompts, partials)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_strategy_returns_its_choice_candidates_and_cost(method, process):
    strategy = make_strategy(method, lambda t: t[:3] or None)
    scorer = None if method in UNSCORED else Spy()
    res = strategy.run(process, scorer, 4, PROMPT, seed=3)
    assert res.method == method.replace("sc-early", "sc").replace("sc-short", "sc")
    assert res.candidates and res.text in [c.text for c in res.candidates]
    assert res.cost.generated_tokens > 0 and res.cost.forward_tokens > 0 and res.cost.seconds > 0
    if scorer is not None:
        assert res.cost.scorer_calls == scorer.calls > 0
    again = strategy.run(process, None if method in UNSCORED else Spy(), 4, PROMPT, seed=3)
    assert again.text == res.text  # same seed, same result


def test_step_wise_strategies_never_rerun_a_prefix(process):
    for method in ("pf", "beam", "mcts"):
        res = make_strategy(method, lambda t: None).run(process, OraclePRM(), 8, PROMPT, seed=0)
        prompt_tokens = len(process.generator.encode(PROMPT))
        # the prompt once, every generated token at most once, plus one pending token per fork at most
        assert res.cost.forward_tokens - prompt_tokens <= res.cost.generated_tokens + 8 * 3


def test_scorers_that_return_nan_or_out_of_range_are_refused(process):
    class Bad(OraclePRM):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def score(self, prompts, partials):
            return [self.value] * len(partials)

    for value in (math.nan, 1.5):
        with pytest.raises(ScorerError):
            make_strategy("bon", lambda t: t).run(process, Bad(value), 2, PROMPT, seed=0)


def test_unknown_methods_scorers_and_bad_budgets_are_clear_errors(process):
    with pytest.raises(ConfigError, match="unknown method"):
        make_strategy("nope", lambda t: t)
    with pytest.raises(ConfigError, match="unknown scorer"):
        make_scorer("nope")
    with pytest.raises(ConfigError, match="budget"):
        make_strategy("pf", lambda t: t).run(process, OraclePRM(), 0, PROMPT)
    with pytest.raises(ConfigError, match="needs a scorer"):
        make_strategy("pf", lambda t: t).run(process, None, 2, PROMPT)


class Fixed:
    """A process stand-in whose samples are given texts (for vote arithmetic)."""

    def __init__(self, texts):
        from steerable.lm.types import Usage

        self.texts, self.usage = texts, Usage()

    def init(self, prompt, n, seed=None):
        return list(self.texts[:n])

    def is_terminal(self, state):
        return [True] * len(state)

    def preview(self, state):
        return state

    def start_run(self):
        pass


def test_votes_majority_ties_and_length_weighting():
    from steerable.search.best_of_n import SelfConsistency

    texts = ["A: 1", "long long A: 2", "long long long A: 2", "A: 1 ok", "A: 3"]
    ex = lambda t: t.split("A: ")[1].split()[0]  # noqa: E731
    assert SelfConsistency(extract=ex).run(Fixed(texts), None, 5, "q").answer == "1"  # tie: first seen
    assert SelfConsistency(extract=ex, prefer_shorter=True).run(Fixed(texts), None, 5, "q").answer == "1"
    plain = ["long long A: 2", "long long long A: 2", "A: 1", "A: 1 ok"]
    assert SelfConsistency(extract=ex).run(Fixed(plain), None, 4, "q").answer == "2"
    assert SelfConsistency(extract=ex, prefer_shorter=True).run(Fixed(plain), None, 4, "q").answer == "1"
    weighted = ["long long A: 2", "long long long A: 2", "long long long long A: 2", "A: 1", "A: 1"]
    assert SelfConsistency(extract=ex).run(Fixed(weighted), None, 5, "q").answer == "2"
    assert SelfConsistency(extract=ex, length_power=2.0).run(Fixed(weighted), None, 5, "q").answer == "1"


def test_particle_gibbs_keeps_the_reference_trajectory_at_row_zero(process):
    from steerable.search.particle_filter import ParticleFilter
    from steerable.search.particle_gibbs import ParticleGibbs

    first = ParticleFilter(extract=lambda t: t).run(process, OraclePRM(), 4, PROMPT, seed=2)
    res = ParticleGibbs(sweeps=2, extract=lambda t: t).run(process, OraclePRM(), 4, PROMPT, seed=2)
    assert res.candidates[0].text == first.text


@pytest.mark.parametrize("method", ["sc", "bon", "beam", "pf", "pgibbs", "astar", "mcts", "refine"])
def test_a_token_budget_is_never_exceeded_and_restarts_with_each_run(method, process, char_tokenizer):
    capped = LMProcess(
        process.generator,
        delimiter="\n",
        params=SamplingParams(temperature=1.0),
        max_step_tokens=6,
        max_steps=3,
        max_tokens=18,
        token_budget=25,
    )
    strategy = make_strategy(method, lambda t: t[:3] or None)
    scorer = None if method in UNSCORED else OraclePRM()
    for seed in (0, 1):  # the second run gets its own 25 tokens
        res = strategy.run(capped, scorer, 8, PROMPT, seed=seed)
        assert 0 < res.cost.generated_tokens <= 25
    uncapped = strategy.run(process, scorer, 8, PROMPT, seed=0)
    assert uncapped.cost.generated_tokens > 25  # the cap is what held the others back
    with pytest.raises(ConfigError, match="token_budget"):
        LMProcess(process.generator, token_budget=0)
