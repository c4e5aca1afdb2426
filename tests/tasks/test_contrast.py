import pytest

from steerable.errors import InputError
from steerable.tasks.builtin.contrast import capability_texts, contrast_set
from steerable.tasks.builtin.requests import all_requests
from steerable.tasks.builtin.verifier import check_steps


def test_refusal_set_is_plain_training_requests_split_by_harm():
    harmful, benign = contrast_set("refusal")
    by_prompt = {r.prompt: r for r in all_requests()}
    assert harmful and benign
    assert all(by_prompt[p].harmful and not by_prompt[p].jailbreak and not by_prompt[p].held_out for p in harmful)
    assert all(not by_prompt[p].harmful and not by_prompt[p].jailbreak and not by_prompt[p].held_out for p in benign)


def test_efficiency_pairs_are_the_same_problem_cut_after_the_same_operation():
    concise, verbose = contrast_set("efficiency", n=16)
    assert len(concise) == len(verbose) == 16
    for c, v in zip(concise, verbose, strict=True):
        c_lines, v_lines = c.split("\n"), v.split("\n")
        assert c_lines[0] == v_lines[0]  # same prompt
        assert v_lines[2].startswith("check ") and "check" not in c
        assert c_lines[-2] == v_lines[-2] and c.endswith("\n")  # both end on the second operation line


def test_capability_texts_are_correct_worked_solutions():
    texts = capability_texts(n=8)
    assert len(texts) == 8 and any("check" in t for t in texts)
    for t in texts:
        prompt, solution = t.split("\n", 1)
        assert all(s.correct for s in check_steps(prompt + "\n", solution))


def test_unknown_set_is_a_clear_error():
    with pytest.raises(InputError, match="unknown built-in prompt set"):
        contrast_set("nope")
