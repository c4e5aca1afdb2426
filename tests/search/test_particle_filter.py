"""PF's weights and ePF's temperature against from-scratch computations of the formulas."""

import math
from dataclasses import dataclass, field

import pytest

import steerable.search.particle_filter as pf_module
from steerable.errors import ConfigError
from steerable.search.particle_filter import ParticleFilter
from steerable.search.process import StepCapped
from steerable.search.registry import make_strategy
from steerable.usage import Usage


@dataclass
class Lockstep:
    """Every row takes one step per propose and all rows end together after ``steps`` steps."""

    steps: int
    usage: Usage = field(default_factory=Usage)

    def start_run(self):
        pass

    def init(self, prompt, n, seed=None):
        return [0] * n

    def size(self, state):
        return len(state)

    def is_terminal(self, state):
        return [t >= self.steps for t in state]

    def propose(self, state):
        state[:] = [t + 1 for t in state]

    def select(self, state, rows):
        return [state[r] for r in rows]

    def concat(self, states):
        return [t for s in states for t in s]

    def preview(self, state):
        return [f"step {t}" for t in state]


@dataclass
class Capped(Lockstep, StepCapped):
    max_steps: int = 40


class Table:
    """Scores call k with row ``table[k]`` (every row is live at every step in Lockstep)."""

    range = (0.0, 1.0)

    def __init__(self, table):
        self.table, self.calls, self.forward_tokens = table, 0, 0

    def score(self, prompts, samples):
        out = self.table[self.calls]
        self.calls += 1
        assert len(out) == len(samples)
        return list(out)


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def logit(r):
    return math.log(r / (1 - r))


@pytest.fixture
def seen(monkeypatch):
    """The weights every resampling step was given."""
    calls = []
    real = pf_module.resample

    def spy(scheme, weights, n, g):
        calls.append((scheme, weights.tolist()))
        return real(scheme, weights, n, g)

    monkeypatch.setattr(pf_module, "resample", spy)
    return calls


def test_pf_resamples_by_softmax_of_logit_over_temperature_and_weighs_candidates_by_final_logit(seen):
    table = [[0.9, 0.2, 0.5, 0.7], [0.3, 0.8, 0.6, 0.1], [0.95, 0.4, 0.05, 0.6]]
    res = ParticleFilter(temperature=0.7).run(Lockstep(steps=3), Table(table), 4, "q", seed=0)
    assert [s for s, _ in seen] == ["multinomial", "multinomial"]  # after steps 1 and 2; step 3 ends every row
    for (_, got), scores in zip(seen, table, strict=False):
        want = softmax([logit(r) / 0.7 for r in scores])
        assert got == pytest.approx(want, abs=1e-9)
    final = table[-1]
    assert [c.score for c in res.candidates] == final
    assert [c.weight for c in res.candidates] == pytest.approx(softmax([logit(r) for r in final]), abs=1e-9)
    assert res.candidates[final.index(max(final))].sample == res.sample
    assert res.info["counts"] == {"resampling_steps": 2, "annealed_steps": 0}


def test_epf_temperature_is_n_over_ess_times_remaining_progress_only_early_and_when_ess_is_low(seen):
    n, t_max = 8, 8
    collapsed = [0.99] + [0.01] * 7  # ESS near 1
    even = [0.6] * 8  # ESS = N
    table = [collapsed, even, collapsed, collapsed, even]  # resampling after steps 1-4; t/t_max = 1/8 ... 4/8
    res = ParticleFilter(entropic=True, resampling="stratified", t_max=t_max).run(
        Lockstep(steps=5), Table(table), n, "q", seed=1
    )
    want_t, fired = [], 0
    for step, scores in enumerate(table[:4], start=1):
        p = softmax([logit(r) for r in scores])
        ess = 1 / sum(x * x for x in p)
        temp = 1.0
        if ess / n < 0.5 and step / t_max < 0.5:
            temp = max(1.0, n / ess * (1 - step / t_max))
        fired += temp > 1.0
        want_t.append(temp)
        assert res.info["ess"][step - 1] == pytest.approx(ess, abs=1e-3)
        scheme, got = seen[step - 1]
        assert scheme == "stratified"
        assert got == pytest.approx(softmax([logit(r) / temp for r in scores]), abs=1e-9)
    assert res.info["temperatures"] == pytest.approx(want_t, abs=1e-3)
    assert want_t[0] > 1 and want_t[1] == 1 and want_t[3] == 1  # fired early, not on even weights, not at t/t_max 0.5
    assert res.info["counts"] == {"resampling_steps": 4, "annealed_steps": fired} and fired == 2


def test_epf_takes_t_max_from_the_process_step_cap_unless_given():
    table = [[0.5, 0.5]] * 3
    res = make_strategy("epf", lambda s: None).run(Capped(steps=3, max_steps=12), Table(table), 2, "q", seed=0)
    assert res.info["t_max"] == 12
    res = ParticleFilter(entropic=True, t_max=5).run(Capped(steps=3), Table(table), 2, "q", seed=0)
    assert res.info["t_max"] == 5
    assert not isinstance(Lockstep(steps=3), StepCapped)
    with pytest.raises(ConfigError, match="no step cap: give t_max"):
        ParticleFilter(entropic=True).run(Lockstep(steps=3), Table(table), 2, "q")
    assert ParticleFilter().run(Lockstep(steps=3), Table(table), 2, "q").info["t_max"] is None  # PF needs none


def test_the_resampling_scheme_is_an_option_with_each_papers_default():
    ex = lambda s: None  # noqa: E731
    assert make_strategy("pf", ex).resampling == "multinomial"
    assert make_strategy("epf", ex).resampling == "systematic"
    assert make_strategy("epf", ex, {"resampling": "multinomial"}).resampling == "multinomial"
    assert make_strategy("pf", ex, {"resampling": "stratified"}).resampling == "stratified"
    assert make_strategy("pf:resampling=systematic", ex).resampling == "systematic"  # a command line's spelling
    spec = make_strategy("epf:resampling=multinomial:t_max=30", ex)
    assert (spec.entropic, spec.resampling, spec.t_max) == (True, "multinomial", 30)
    with pytest.raises(ConfigError, match="name=value"):
        make_strategy("pf:systematic", ex)
    with pytest.raises(ConfigError, match="resampling must be one of"):
        ParticleFilter(resampling="residual")
    with pytest.raises(ConfigError, match="t_max must be >= 1"):
        ParticleFilter(entropic=True, t_max=0)
