"""The shipped PRM: a plain transformers token classifier that ranks a right step above each kind of wrong one."""

import pytest

from steerable.lm.builtin import BUILTIN_PRM_DIR

Q = "Q: 37+48-19*3+5=\n"  # 37+48=85, 85-19=66, 66*3=198, 198+5=203
RIGHT = ["37+48=85", "85-19=66", "66*3=198", "198+5=203"]

# (kind, lines before the error, the right lines, the wrong lines): the PRM scores the partial after the last line
CASES = [
    ("skip", RIGHT[:1], ["85-19=66"], ["85*3=255"]),
    ("skip", RIGHT[:2], ["66*3=198"], ["66+5=71"]),
    ("repeat", RIGHT[:2], ["66*3=198"], ["66-19=47"]),
    ("repeat", RIGHT[:1], ["85-19=66"], ["85+48=133"]),
    ("swap", RIGHT[:1], ["85-19=66", "66*3=198"], ["85*3=255", "255-19=236"]),
    ("digit", [], ["37+48=85"], ["37+48=86"]),
    ("digit", RIGHT[:2], ["66*3=198"], ["66*3=188"]),
    ("digit", RIGHT[:3], ["198+5=203"], ["198+5=103"]),
    ("operand", RIGHT[:1], ["85-19=66"], ["85-18=67"]),
    ("chain", RIGHT[:1], ["85-19=66"], ["86-19=67"]),
]


@pytest.fixture(scope="module")
def prm():
    from steerable.reward.prm import TokenClassifierPRM

    return TokenClassifierPRM.from_pretrained("builtin")


def test_shipped_prm_loads_through_transformers_auto_classes():
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(BUILTIN_PRM_DIR)
    tok = AutoTokenizer.from_pretrained(BUILTIN_PRM_DIR)
    assert model.config.num_labels == 1 and len(tok) == model.config.vocab_size
    assert (BUILTIN_PRM_DIR / "model.safetensors").stat().st_size < 30 * 2**20


@pytest.mark.parametrize(("kind", "before", "right", "wrong"), CASES)
def test_shipped_prm_ranks_a_right_step_above_a_wrong_one(prm, kind, before, right, wrong):
    good, bad = prm.score([Q, Q], ["".join(line + "\n" for line in before + lines) for lines in (right, wrong)])
    assert 0.0 < bad < good < 1.0


def test_shipped_prm_keeps_a_check_line_that_repeats_a_wrong_step_low(prm):
    good = "37+48=85\ncheck 37+48=85\n85-19=66\ncheck 85-19=66\n"
    bad = "37+48=85\ncheck 37+48=85\n85-19=76\ncheck 85-19=76\n"
    s_good, s_bad = prm.score([Q, Q], [good, bad])
    assert s_bad < 0.5 < s_good


def test_shipped_prm_scores_a_consistent_wrong_chain_below_the_right_solution(prm):
    """A skipped operation followed by right arithmetic and check lines: what the old PRM rated highest."""
    right = "\n".join(f"{s}\ncheck {s}" for s in RIGHT) + "\nA: 203"
    skipped = "37+48=85\ncheck 37+48=85\n85*3=255\ncheck 85*3=255\n255+5=260\ncheck 255+5=260\nA: 260"
    s_right, s_skipped = prm.score([Q, Q], [right, skipped])
    assert s_skipped < 0.5 < s_right
