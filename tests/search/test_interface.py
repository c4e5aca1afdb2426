"""One interface for two families: a process whose samples are tensors runs through the same strategies."""

import math
from dataclasses import dataclass, field

import pytest
import torch

from steerable.errors import ConfigError
from steerable.reward.scorer import ScorerError
from steerable.search.base import Strategy, run_to_end
from steerable.search.process import Completes, Forces, Process
from steerable.search.registry import METHODS, make_strategy
from steerable.search.result import Candidate, Cost
from steerable.usage import Usage


@dataclass
class WalkState:
    x: torch.Tensor  # [rows, 2]
    t: list[int]


@dataclass
class Walk:
    """A toy non-text process: a 2-D random walk of ``steps`` steps; each step costs one denoiser call per row."""

    steps: int = 3
    usage: Usage = field(default_factory=Usage)

    def start_run(self) -> None:
        pass

    def init(self, prompt, n, seed=None):
        self.g = torch.Generator().manual_seed(seed or 0)
        return WalkState(torch.zeros(n, 2), [0] * n)

    def size(self, state):
        return len(state.t)

    def is_terminal(self, state):
        return [t >= self.steps for t in state.t]

    def propose(self, state):
        live = [i for i, t in enumerate(state.t) if t < self.steps]
        state.x[live] += torch.randn(len(live), 2, generator=self.g)
        for i in live:
            state.t[i] += 1
        self.usage = self.usage + Usage(nfe=len(live))

    def select(self, state, rows):
        return WalkState(state.x[list(rows)].clone(), [state.t[r] for r in rows])

    def concat(self, states):
        return WalkState(torch.cat([s.x for s in states]), [t for s in states for t in s.t])

    def preview(self, state):
        return state.x  # [rows, 2]: a tensor is a sequence of rows


class NegDistance:
    """A log-density-like reward: -|x - target|^2, in (-inf, 0]."""

    range = (-math.inf, 0.0)

    def __init__(self):
        self.calls = 0
        self.forward_tokens = 0

    def score(self, prompts, samples):
        self.calls += 1
        target = torch.tensor([float(p) for p in prompts])[:, None].expand(-1, 2)
        x = torch.stack(list(samples)) if not isinstance(samples, torch.Tensor) else samples
        return (-((x - target) ** 2).sum(-1)).tolist()


def test_the_toy_walk_satisfies_the_process_protocol_and_no_optional_capability():
    assert isinstance(Walk(), Process)
    assert not isinstance(Walk(), Completes) and not isinstance(Walk(), Forces)


@pytest.mark.parametrize("method", ["bon", "beam", "dvts", "mcts", "astar"])
def test_strategies_over_tensor_samples_keep_the_sample_count_model_calls_and_have_no_text(method):
    strategy = make_strategy(method, lambda x: None)
    assert isinstance(strategy, Strategy)
    scorer = NegDistance()
    res = strategy.run(Walk(), scorer, 4, "2", seed=0)
    assert isinstance(res.sample, torch.Tensor) and res.sample.shape == (2,)
    assert res.text is None and all(c.text is None for c in res.candidates)
    assert res.cost.nfe > 0 and res.cost.generated_tokens == 0 and res.cost.scorer_calls == scorer.calls
    best = max(res.candidates, key=lambda c: c.score)
    assert torch.equal(res.sample, best.sample)
    assert best.score == pytest.approx(-float(((res.sample - 2.0) ** 2).sum()))


def test_best_of_n_picks_the_highest_reward_with_rewards_below_zero():
    res = make_strategy("bon", lambda x: None).run(Walk(steps=2), NegDistance(), 8, "1", seed=3)
    scores = [c.score for c in res.candidates]
    assert all(s <= 0 for s in scores) and res.candidates[scores.index(max(scores))].weight == 1.0
    assert res.cost.nfe == 8 * 2  # every row, every step, one evaluation


def test_particle_filters_refuse_a_scorer_that_is_not_a_probability():
    for method in ("pf", "epf", "pgibbs"):
        with pytest.raises(ConfigError, match=r"logit\(score\)"):
            make_strategy(method, lambda x: None).run(Walk(), NegDistance(), 4, "1", seed=0)


def test_a_scorer_is_checked_before_any_work():
    class NoTokens:
        range = (0.0, 1.0)
        calls = 0

        def score(self, prompts, samples):
            return [0.5] * len(samples)

    with pytest.raises(ConfigError, match="lacks forward_tokens"):
        make_strategy("bon", lambda x: None).run(Walk(), NoTokens(), 2, "1")

    class Backwards(NegDistance):
        range = (0.0, -1.0)

    with pytest.raises(ConfigError, match="lo < hi"):
        make_strategy("bon", lambda x: None).run(Walk(), Backwards(), 2, "1")

    class Positive(NegDistance):
        range = (0.0, math.inf)

    with pytest.raises(ScorerError, match="outside its range"):
        make_strategy("bon", lambda x: None).run(Walk(), Positive(), 2, "5", seed=0)


def test_run_to_end_completes_in_one_call_where_the_process_declares_it():
    class Finisher(Walk, Completes):
        completed = 0

        def complete(self, state):
            self.completed += 1
            state.t = [self.steps] * len(state.t)
            return state

    p = Finisher()
    state = run_to_end(p, p.init("0", 3))
    assert p.completed == 1 and all(p.is_terminal(state)) and p.usage.nfe == 0


def test_text_candidates_and_results_carry_their_text_and_cost_counts_every_family():
    c = Candidate("A: 3", "3", 0.9)
    assert c.sample == c.text == "A: 3"
    assert Candidate(torch.zeros(2), None, -1.0).text is None
    assert Cost().nfe == Cost().decoder_calls == Cost().env_steps == 0
    u = Usage(generated_tokens=3, nfe=4) + Usage(forward_tokens=2, nfe=1, env_steps=5)
    assert u == Usage(generated_tokens=3, forward_tokens=2, nfe=5, env_steps=5)
    assert u - Usage(nfe=5) == Usage(generated_tokens=3, forward_tokens=2, env_steps=5)


def test_every_registered_method_declares_the_strategy_protocol():
    for name in METHODS:
        assert isinstance(make_strategy(name, lambda x: None), Strategy), name
