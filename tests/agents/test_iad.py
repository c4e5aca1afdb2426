import random
import re

import pytest
from scripted import ScriptGenerator

from steerable.agents.process import AgentProcess, episode
from steerable.agents.registry import make_method
from steerable.errors import ConfigError
from steerable.lm.types import SamplingParams
from steerable.tasks.agent import data
from steerable.tasks.agent.envs import feedback_line, review

TASK = {"env": "chains", "start": 10, "ops": "+5*2-3+1"}  # rounds end at 10+5=15, *2=30, -3=27 | +1=28


def test_the_review_counts_the_right_reports_before_the_first_wrong_one():
    assert review(TASK, "next\n= +5*2-3\nS: 27\nnext\n= +1\nS: 29\n") == (1, 2, [27, 29])
    assert review(TASK, "S: 26\nS: 28\n") == (0, 2, [26, 28])  # a later right report after a slip does not count
    assert review(TASK, "S: 27\nS: 28\nS: 99\n") == (2, 2, [27, 28])  # reports past the last round are ignored
    assert review(TASK, "next\n") == (0, 2, [])
    assert feedback_line("best", 1, 2, [27, 29]) == "best 1/2: 27 29"


def test_the_simulated_candidates_of_training_are_right_exactly_as_long_as_their_review_says():
    rng = random.Random(0)
    for _ in range(200):
        task = data.chains_task(rng, rng.randint(4, 12))
        rounds = (len(data.chain_ops(task["ops"])) + 2) // 3
        right = rng.randint(0, rounds - 1)
        fb = data.simulated_candidate(task, rng, right)
        assert fb[:2] == (right, rounds)
        assert review(task, "".join(f"S: {r}\n" for r in fb[2]))[0] == right  # the environment agrees
        demo = data.iad_demo(task, rng)
        prompt = demo[0][0]
        assert prompt.startswith(f"[next] Q: chain from {task['start']}\nbest ") and not demo[0][1]
        text = "".join(t for t, _ in demo[1:])
        assert review(task, text)[0] == rounds  # the trained continuation is the right transcript


def slipping_policy(context: str, rng, greedy: bool) -> str:
    """Works the chain, but slips (off by one) on any round after the first with probability 1/2, unless the
    best earlier candidate shown had that round right: then it copies that report."""
    lines = context.rstrip("\n").split("\n")
    if lines[-1] == "= end":
        return "A: " + (re.findall(r"^S: (-?\d+)$", context, re.M) or re.findall(r"from (\d+)", context))[-1]
    if lines[-1].startswith("= "):
        rounds = [ln for ln in lines if ln.startswith("= ") and ln != "= end"]
        i = len(rounds) - 1
        best = re.search(r"^best (\d+)/\d+:(.*)$", context, re.M)
        if best and i < int(best.group(1)):
            return f"S: {best.group(2).split()[i]}"
        acc = int((re.findall(r"^S: (-?\d+)$", context, re.M) or re.findall(r"from (\d+)", context))[-1])
        for op, b in re.findall(r"([+\-*])(\d+)", lines[-1]):
            acc = acc + int(b) if op == "+" else acc - int(b) if op == "-" else acc * int(b)
        return f"S: {acc + (i >= 1 and rng.random() < 0.5)}"
    return "next"


def _run(name: str, task: dict, budget: int, seed: int):
    proc = AgentProcess(ScriptGenerator(slipping_policy), SamplingParams(temperature=1.0))
    prompts: list[str] = []
    start = proc.generator.start
    proc.generator.start = lambda ps, n=1: (prompts.append(ps[0]), start(ps, n))[1]
    _, method = make_method(name)
    return method.run(proc, None, budget, episode(task), seed=seed), prompts


def test_feedback_lets_the_model_keep_what_was_right_and_resampling_does_not():
    rng = random.Random(3)
    tasks = [data.chains_task(rng, 15) for _ in range(12)]  # five rounds: four chances to slip
    solved = {"iad": 0, "resample": 0}
    for name in solved:
        for i, task in enumerate(tasks):
            res, prompts = _run(name, task, 8, seed=i)
            solved[name] += res.answer == str(task_answer(task))
            counts = res.info["counts"]
            assert counts["calls"] == len(prompts) <= 8
            if name == "resample":
                assert counts["feedback_shown"] == 0 and all("best" not in p for p in prompts)
            else:
                assert counts["feedback_shown"] == counts["calls"] - 1
                assert all(re.search(r"\nbest \d/5:( -?\d+)+\n", p) for p in prompts[1:])
    assert solved["iad"] >= 10 and solved["resample"] <= solved["iad"] - 4, solved


def task_answer(task: dict) -> int:
    return data.running_values(task["start"], task["ops"])[-1]


def test_the_best_candidate_is_committed_and_a_solved_one_stops_the_calls():
    res, prompts = _run("iad", TASK, 6, seed=0)
    assert res.answer == "28" and res.info["counts"]["calls"] == len(prompts)
    res, prompts = _run("resample:stop_solved=false", TASK, 6, seed=0)
    assert res.info["counts"]["calls"] == 6 == len(prompts) and res.answer == "28"


def test_iad_refuses_an_environment_without_a_review_and_a_zero_budget():
    proc = AgentProcess(ScriptGenerator(slipping_policy), SamplingParams(temperature=1.0))
    _, method = make_method("iad")
    with pytest.raises(ConfigError, match="chains"):
        method.run(proc, None, 4, episode(data.split_tasks("lookup", "easy", 1)[0]), seed=0)
    with pytest.raises(ConfigError, match="budget"):
        method.run(proc, None, 0, episode(TASK), seed=0)
