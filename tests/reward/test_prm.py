import pytest

from steerable.reward.prm import OraclePRM, TokenClassifierPRM
from steerable.tasks.builtin.arithmetic import eval_problems


@pytest.fixture(scope="module")
def prm():
    return TokenClassifierPRM.from_pretrained("builtin")


def corrupt(solution: str) -> str:
    """The first step with its result off by one: wrong from the first line on."""
    first, rest = solution.split("\n", 1)
    lhs, rhs = first.split("=")
    return f"{lhs}={int(rhs) + 1}\n"


def test_builtin_prm_prefers_correct_first_steps(prm):
    problems = eval_problems("medium", 40, seed=4)
    prompts = [p.prompt for p in problems]
    good = prm.score(prompts, [p.solution().split("\n")[0] + "\n" for p in problems])
    bad = prm.score(prompts, [corrupt(p.solution()) for p in problems])
    assert all(0.0 <= s <= 1.0 for s in good + bad)
    assert sum(g > b for g, b in zip(good, bad, strict=True)) >= 30
    assert prm.info["step_auroc"] > 0.8


def test_prm_scores_do_not_depend_on_batch_padding(prm):
    problems = eval_problems("hard", 6, seed=1)
    prompts = [p.prompt for p in problems]
    partials = [p.solution()[: 5 + 7 * i] for i, p in enumerate(problems)]
    together = prm.score(prompts, partials)
    alone = [prm.score([a], [b])[0] for a, b in zip(prompts, partials, strict=True)]
    assert together == pytest.approx(alone, abs=1e-5)


def test_oracle_prm_is_the_exact_checker():
    p = eval_problems("easy", 1)[0]
    sol = p.solution()
    oracle = OraclePRM()
    assert oracle.score([p.prompt, p.prompt, p.prompt], ["", sol, corrupt(sol)]) == [1.0, 1.0, 0.0]
