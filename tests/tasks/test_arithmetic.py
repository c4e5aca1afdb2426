import random

from hypothesis import given, settings
from hypothesis import strategies as st

from steerable.tasks.builtin import arithmetic
from steerable.tasks.builtin.arithmetic import Problem, eval_problems, parse_problem, sample_problem


def test_chain_is_evaluated_left_to_right_whatever_the_operator():
    p = Problem((5, 3, 8), ("-", "*"))
    assert p.answer == 16  # (5-3)*8, not 5-(3*8)
    assert p.prompt == "Q: 5-3*8=\n"
    assert p.solution("concise") == "5-3=2\n2*8=16\nA: 16"


def test_verbose_style_inserts_check_lines_between_steps():
    p = Problem((37, 48, 19), ("+", "-"))
    assert p.solution("verbose") == "37+48=85\ncheck 37+48=85\n85-19=66\ncheck 85-19=66\nA: 66"


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 10**6), n_ops=st.integers(1, 8))
def test_sampled_problems_respect_the_worlds_rules(seed, n_ops):
    p = sample_problem(random.Random(seed), n_ops)
    assert p.n_ops == n_ops
    assert 1 <= p.operands[0] <= 99
    for step in p.steps:
        assert 0 <= step.result <= arithmetic.MAX_VALUE
        if step.op == "*":
            assert 2 <= step.b <= 9
        else:
            assert 1 <= step.b <= 99
    assert parse_problem(p.prompt) == p


def test_eval_problems_are_held_out_deterministic_and_cover_the_split():
    a = eval_problems("hard", 40, seed=1)
    assert a == eval_problems("hard", 40, seed=1)
    assert a != eval_problems("hard", 40, seed=2)
    assert all(p.held_out for p in a)
    assert {p.n_ops for p in a} == {5, 6, 7, 8}
    assert len({p.prompt for p in a}) == 40


def test_training_problems_never_include_held_out_ones():
    rng = random.Random(0)
    assert not any(arithmetic.train_problem(rng).held_out for _ in range(2000))


def test_parse_problem_rejects_non_problems():
    assert parse_problem("R: how do I bake a cake?") is None
    assert parse_problem("Q: 1+=") is None
    assert parse_problem("Q: 12=") is None
