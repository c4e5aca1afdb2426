"""User regexes are matched by RE2: linear time whatever the pattern, one-line errors for what RE2 refuses."""

import time

import pytest

from steerable.errors import ConfigError
from steerable.tasks.answers import compile_user_regex, make_checker


def test_catastrophic_pattern_matches_in_linear_time():
    # under Python's backtracking `re` this pattern on 30 characters takes minutes
    checker = make_checker(regex=r"^((.|\n)+)+!$")
    t0 = time.perf_counter()
    assert checker.extract("a" * 200_000) is None
    assert checker.extract("x\ny!") == "x\ny"  # group 1 of the match
    assert time.perf_counter() - t0 < 1.0


def test_groups_and_last_match_as_before():
    rx = make_checker(regex=r"answer is (\d+)")
    assert rx.extract("answer is 3, no, the answer is 45") == "45"
    assert make_checker(regex=r"A: -?\d+").extract("A: -7") == "A: -7"  # no group: the whole match


@pytest.mark.parametrize(
    "pattern,needle",
    [("(?=a)b", "lookarounds"), (r"(a)\1", "backreferences"), ("(", "missing )"), ("a" * 1001, "over the limit")],
)
def test_refused_patterns_are_one_line_errors_naming_the_field(pattern, needle):
    with pytest.raises(ConfigError) as e:
        compile_user_regex(pattern, "scaling.answer_regex")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("scaling.answer_regex") and needle in msg


def test_a_non_string_pattern_is_refused():
    with pytest.raises(ConfigError, match="must be a string"):
        compile_user_regex(5, "answer_regex")  # type: ignore[arg-type]
