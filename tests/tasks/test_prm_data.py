import random

import pytest

from steerable.tasks.builtin.arithmetic import Problem, apply, train_problem
from steerable.tasks.builtin.prm_data import KINDS, one_digit_off, partial, plant
from steerable.tasks.builtin.verifier import _STEP, prefix_correct


def _steps(text: str) -> list[tuple[bool, int, str, int, int]]:
    out = []
    for line in text.split("\n"):
        m = _STEP.match(line)
        if m:
            out.append((bool(m.group(1)), int(m.group(2)), m.group(3), int(m.group(4)), int(m.group(5))))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_planted_errors_start_at_their_line_and_continue_consistently(kind):
    rng = random.Random(kind)
    for _ in range(40):
        p = train_problem(rng, 3, 8)
        x = plant(rng, p, kind)
        assert x is not None
        flags = prefix_correct(p, x.solution)
        first = flags.index(False)
        assert x.line == (first + 1 if kind == "check" else first)
        assert x.correct == p.solution("verbose" if "check" in x.solution else "concise")
        assert all(prefix_correct(p, x.correct))
        lines = x.solution.split("\n")
        wrong = first  # the planted line; every other computation chains from the previous result
        comps = [(i, _steps(ln)[0]) for i, ln in enumerate(lines) if _steps(ln) and not _steps(ln)[0][0]]
        for (_, prev), (i, cur) in zip(comps, comps[1:], strict=False):
            assert cur[1] == prev[4] or i == wrong
        # arithmetic is right on every computation line except a planted wrong result
        bad_arith = [i for i, (_, a, op, b, c) in comps if apply(a, op, b) != c]
        assert bad_arith in ([], [wrong])
        if kind in ("skip", "repeat", "swap", "operand", "chain"):
            assert bad_arith == []
        if kind != "recheck":  # check lines repeat the step before them, wrong or not
            lines = x.solution.split("\n")
            for i, ln in enumerate(lines):
                if ln.startswith("check"):
                    assert ln == "check " + lines[i - 1]


def test_skip_repeat_swap_take_the_operations_in_the_wrong_order():
    p = Problem((50, 3, 2, 7), ("+", "*", "-"))
    got = {kind: plant(random.Random(1), p, kind, verbose=False) for kind in ("skip", "repeat", "swap")}
    assert got["skip"].solution.split("\n")[got["skip"].line] in ("50*2=100", "53-7=46")
    assert got["repeat"].solution.split("\n")[got["repeat"].line] in ("53+3=56", "106*2=212", "99-7=92")
    assert got["swap"].solution.split("\n")[got["swap"].line] in ("50*2=100", "53-7=46")


def test_one_digit_off_changes_exactly_one_digit():
    rng = random.Random(0)
    for n in (0, 7, 40, 305, 999):
        for _ in range(20):
            v = one_digit_off(rng, n)
            a, b = str(n), str(v)
            assert len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1


def test_partial_is_what_a_search_scores_after_a_step():
    sol = "1+2=3\ncheck 1+2=3\nA: 3"
    assert partial(sol, 0) == "1+2=3\n"
    assert partial(sol, 2) == sol
