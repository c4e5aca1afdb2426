import re

import pytest
from scripted import ScriptGenerator

from steerable.agents.aries import Action, Aries, RulePolicy, StaticSchedule
from steerable.agents.process import AgentProcess, episode
from steerable.agents.registry import make_method
from steerable.agents.thought_graph import GraphSummary, NodeView, Solver, ThoughtGraph, apply, pose, verify
from steerable.bench.agent_scale import run_agent_scale
from steerable.errors import ConfigError
from steerable.lm.types import SamplingParams
from steerable.tasks.agent.envs import chain_ops, replay

_STEP = re.compile(r"(\d+)([+\-*])(\d+)=(-?\d+)")


def calc_policy(wrong):
    """A scripted text-only calculator solver: each line is the next step from its own running value, off by one
    where ``wrong(a, op, b, greedy)`` says so, then the answer."""

    def policy(context: str, rng, greedy: bool) -> str:
        lines = context.split("\n")
        q = lines[0].removeprefix("Q: ").removesuffix("=")
        first = re.match(r"\d+", q).group()
        ops = chain_ops(q[len(first) :])
        steps = [m for ln in lines[1:] if (m := _STEP.fullmatch(ln))]
        value = int(steps[-1].group(4)) if steps else int(first)
        if len(steps) == len(ops):
            return f"A: {value}"
        op, b = ops[len(steps)]
        return f"{value}{op}{b}={apply(value, op, b) + int(wrong(value, op, b, greedy))}"

    return policy


# twelve +5 steps from 20; the greedy solver gets 45+5 wrong, a sampled one gets everything right
TASK = {"env": "chains", "start": 20, "ops": "+5" * 12}


def greedy_slips_at_45(a, op, b, greedy):
    return greedy and a == 45


def process(wrong=greedy_slips_at_45) -> AgentProcess:
    return AgentProcess(ScriptGenerator(calc_policy(wrong)), SamplingParams(temperature=1.0))


def graph_of(task=TASK, wrong=greedy_slips_at_45) -> ThoughtGraph:
    p = process(wrong)
    greedy = AgentProcess(p.generator, SamplingParams(temperature=0.0))
    return ThoughtGraph(task["start"], task["ops"], Solver(greedy, p, seed=0))


def test_a_start_of_100_or_more_is_posed_as_a_small_product_and_adds():
    assert pose(57) == (57, ()) and pose(0) == (0, ())
    assert pose(744) == (93, (("*", 8),)) and pose(745) == (93, (("*", 8), ("+", 1)))
    assert pose(999) == (99, (("*", 9), ("+", 99), ("+", 9))) and pose(1000) is None and pose(-1) is None
    for v in range(1000):
        first, ops = pose(v)
        value = first
        for op, b in ops:
            value = apply(value, op, b)
        assert value == v and first <= 99 and len(ops) <= 3 and all(1 <= b <= 99 for _, b in ops)


def test_the_verifier_checks_each_line_against_the_questions_ops_and_the_arithmetic():
    ops = [("*", 3), ("-", 7), ("+", 12)]
    good = "12*3=36\ncheck 12*3=36\n36-7=29\n29+12=41\nA: 41"
    c = verify(12, ops, good)
    assert c.verified and c.steps == 3 and c.score == 1.0 and c.value == 41 and c.answer == "41"
    assert c.values == (36, 29, 41) and good[: c.ends[1]] == "12*3=36\ncheck 12*3=36\n36-7=29\n"
    wrong = "12*3=36\n36-7=28\n28+12=40\nA: 40"  # an arithmetic slip at the second step
    c = verify(12, ops, wrong)
    assert not c.verified and c.steps == 1 and c.score == pytest.approx(1 / 3) and c.value == 36
    assert wrong[: c.keep] == "12*3=36\n" and c.answer == "40"
    misread = verify(12, ops, "12*3=36\n36-1=35\n")  # right arithmetic on an operation the question does not hold
    assert (misread.steps, misread.verified) == (1, False)
    from_elsewhere = verify(12, ops, "12*3=36\n35-7=28\n")  # a step that does not start from the running value
    assert from_elsewhere.steps == 1
    assert verify(12, ops, "12*3=36\ncheck 12*3=37\n36-7=29\n").keep == len("12*3=36\n")  # a check must repeat
    assert not verify(12, ops, "12*3=36\n36-7=29\n29+12=41\nA: 40").verified  # a wrong answer line
    assert not verify(12, ops, "12*3=36\n36-7=29\n").verified  # stopped early
    assert not verify(12, ops, "12*3=36\n36-7=29\n29+12=41\n41+1=42\n").verified  # a step too many
    assert verify(12, ops, "12*3=36\n36-7=29\n29+12=41\n").verified  # no answer line: every step is proof enough


def test_decompose_solve_refine_and_aggregate_on_the_graph():
    g = graph_of()
    root = g.nodes[0]
    with pytest.raises(ConfigError, match="fits the calculator"):
        g.solve(root)  # 12 operations: more than a question holds
    a, b = g.decompose(root, 8)
    assert (a.lo, a.hi, b.lo, b.hi) == (0, 8, 8, 12) and g.question(b) is None  # b's start waits on a's result
    with pytest.raises(ConfigError):
        g.solve(b)
    c = g.solve(a)  # greedy: 20+5 ... 40+5 right, then 45+5=51
    assert not c.verified and c.steps == 5 and a.verified_ops() == 5 and a.attempts == 1
    tokens = g.solver.greedy.generator.usage.generated_tokens
    kept = a.best.text[: c.keep]
    c = g.refine(a)  # sampled from the first rejected line on: only the rest is generated
    assert c.verified and a.best.text.startswith(kept) and a.verified and a.result == 60
    new = g.solver.greedy.generator.usage.generated_tokens - tokens
    assert new == len(a.best.text) - len(kept)  # only the lines after the kept ones
    assert g.question(b) == (60, (("+", 5),) * 4) and g.calls == 2
    with pytest.raises(ConfigError, match="every child verified"):
        g.aggregate(root)
    assert g.solve(b).verified
    g.aggregate(root)
    assert root.verified and root.result == 80 and g.answer() == "80"
    assert replay(episode(TASK).env, g.transcript()).solved


def test_decompose_reuses_the_verified_part_of_a_failed_attempt_without_a_model_call():
    task = {"env": "chains", "start": 300, "ops": "+5" * 6}  # 300 is posed as 75*4
    g = graph_of(task, wrong=lambda a, op, b, greedy: a == 310)
    g.solve(g.nodes[0])
    assert g.nodes[0].best.check.steps == 3 and g.nodes[0].verified_ops() == 2  # the encoding's step not counted
    calls = g.calls
    a, b = g.decompose(g.nodes[0], 2)
    assert a.verified and a.result == 310 and g.calls == calls and g.start_of(b) == 310
    assert a.lines == "Q: 75*4+5+5+5+5+5+5=\n75*4=300\n300+5=305\n305+5=310\n"
    assert g.question(b) == (77, (("*", 4), ("+", 2)) + (("+", 5),) * 4)


def view(i, lo, hi, state, children=(), posed=None, attempts=0, verified_ops=0, start=True):
    score = verified_ops / (hi - lo) if attempts else None
    return NodeView(i, lo, hi, None, children, start, posed, state, attempts, score, verified_ops)


def test_the_rule_policy_reads_the_summary():
    policy = RulePolicy(refines=1)
    done = GraphSummary((view(0, 0, 12, "verified"),), 5)
    assert policy(done) == Action("stop")
    agg = GraphSummary((view(0, 0, 12, "decomposed", (1, 2)), view(1, 0, 8, "verified"), view(2, 8, 12, "verified")), 0)
    assert policy(agg) == Action("aggregate", 0)  # aggregating costs no call: it happens with none left
    big = GraphSummary((view(0, 0, 12, "open", posed=14),), 5)  # a start posed in two extra steps
    assert policy(big) == Action("decompose", 0, 6)
    assert policy(GraphSummary((view(0, 0, 12, "open", posed=14),), 0)) == Action("stop")

    def leaf(state, attempts=0, verified_ops=0, size=6):
        nodes = (view(0, 0, 12, "decomposed", (1, 2)), view(1, 0, 6, "verified"),
                 view(2, 6, 6 + size, state, posed=size + 1, attempts=attempts, verified_ops=verified_ops))  # fmt: skip
        return policy(GraphSummary(nodes, 5))

    assert leaf("open") == Action("solve", 2)
    assert leaf("failed", attempts=1, verified_ops=3) == Action("refine", 2)
    assert leaf("failed", attempts=2, verified_ops=3) == Action("decompose", 2, 3)  # where it went wrong
    assert leaf("failed", attempts=2, verified_ops=0) == Action("decompose", 2, 3)  # in halves
    assert leaf("failed", attempts=5, size=1) == Action("refine", 2)  # one operation cannot be split
    assert RulePolicy(refines=0)(GraphSummary((view(0, 0, 4, "failed", posed=4, attempts=1, verified_ops=1),), 3)) \
        == Action("decompose", 0, 1)  # fmt: skip
    text = big.text()
    assert "5 model calls left" in text and "node 0: ops 0..12 (12), open, question of 14 ops" in text


def test_aries_verifies_the_chain_with_fewer_calls_than_a_static_schedule_that_samples_every_part():
    cond = episode(TASK)
    res = Aries().run(process(), None, 16, cond, seed=0)
    assert replay(cond.env, res.text).solved and res.answer == "80"
    assert res.info["counts"] == {"decompose": 1, "solve": 2, "refine": 1, "aggregate": 1, "stop": 1,
                                  "model_calls": 3, "verified_root": 1}  # fmt: skip
    io = StaticSchedule().run(process(), None, 16, cond, seed=0)
    assert not replay(cond.env, io.text).solved and io.answer == "81"  # the slip is carried to the end
    sampled = StaticSchedule(samples=3).run(process(), None, 16, cond, seed=0)
    assert replay(cond.env, sampled.text).solved and sampled.info["counts"]["model_calls"] == 6
    assert res.cost.generated_tokens < sampled.cost.generated_tokens
    refined = StaticSchedule(refines=1).run(process(), None, 16, cond, seed=0)
    assert refined.info["counts"]["refine"] == 1 and replay(cond.env, refined.text).solved
    short = Aries().run(process(), None, 1, cond, seed=0)  # one call: the first part fails and the budget is out
    assert short.info["counts"]["model_calls"] == 1 and not replay(cond.env, short.text).solved


def test_bad_options_and_other_environments_are_one_line_errors():
    for spec, what in (("aries:refines=-1", "refines"), ("static:part=6", "part"), ("static:samples=0", "samples"),
                       ("static:depth=2", "no option depth")):  # fmt: skip
        with pytest.raises(ConfigError, match=what):
            make_method(spec)
    lookup = episode({"env": "lookup", "start": "k1", "table": {"k1": "42"}})
    for method in (Aries(), StaticSchedule()):
        with pytest.raises(ConfigError, match="use --env builtin:chains"):
            method.run(process(), None, 4, lookup, seed=0)


def test_agent_scale_runs_aries_and_static_and_sums_their_action_counts(tmp_path):
    tasks = [TASK, {"env": "chains", "start": 7, "ops": "*3+9-4" * 3}]

    def make(greedy: bool) -> AgentProcess:
        return process()

    s = run_agent_scale(tasks, ["aries", "static:part=4"], [12], make, None, tmp_path, seed=0)
    rows = {r["method"]: r for r in s["rows"]}
    assert rows["aries"]["success"] == 1.0 and rows["aries"]["counts"]["model_calls"] == 3 + 2
    assert rows["static:part=4"]["counts"]["solve"] == 3 + 3 and rows["static:part=4"]["items"] == 2
