from hypothesis import given
from hypothesis import strategies as st

from steerable.tasks.builtin.arithmetic import Problem
from steerable.tasks.builtin.verifier import check_steps, extract_answer, is_correct, prefix_correct

P = Problem((37, 48, 19), ("+", "-"))


def test_both_styles_of_a_correct_solution_pass_every_step():
    for style in ("concise", "verbose"):
        sol = P.solution(style)
        assert all(c.correct for c in check_steps(P, sol))
        assert is_correct(P, sol)
        assert is_correct(P.prompt, sol)


def test_wrong_arithmetic_is_caught_and_the_path_stays_wrong():
    sol = "37+48=86\n86-19=67\nA: 67"
    checks = check_steps(P, sol)
    assert [c.correct for c in checks] == [False, True, False]  # 86-19=67 is right arithmetic on a wrong chain
    assert checks[0].reason == "arithmetic wrong"
    assert prefix_correct(P, sol) == [False, False, False]


def test_unchained_step_wrong_operation_and_early_answer_are_wrong():
    assert check_steps(P, "37+48=85\n80-19=61")[1].reason == "not chained from previous result"
    assert check_steps(P, "37+48=85\n85-18=67")[1].reason == "wrong operation for this step"
    assert not check_steps(P, "37+48=85\nA: 85")[1].correct
    assert not check_steps(P, "37+48=85\ncheck 37+48=86")[1].correct


def test_extract_answer_takes_the_last_answer():
    assert extract_answer("A: 3\nA: 12") == 12
    assert extract_answer("no answer") is None
    assert extract_answer("") is None


@given(st.text(max_size=200))
def test_verifier_never_raises_on_arbitrary_text(text):
    check_steps(P, text)
    check_steps("Q: nonsense", text)
    prefix_correct(P, text)
    is_correct("garbage", text)
    assert is_correct(P, text) == (extract_answer(text) == 66)
