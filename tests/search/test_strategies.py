import math

import pytest

from conftest import tiny_model
from steerable.errors import ConfigError
from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams
from steerable.reward.prm import OraclePRM
from steerable.reward.scorer import ScorerError
from steerable.search.process import LMProcess
from steerable.search.registry import METHODS, UNSCORED, make_scorer, make_strategy
from steerable.tasks.builtin.arithmetic import Problem

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
    assert res.method == method.replace("sc-early", "sc")
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
