import pytest
from scripted import ScriptGenerator, lookup_policy

from steerable.agents.process import AgentProcess, episode, real_steps
from steerable.agents.tree import OracleValue, TreeSearch
from steerable.bench.agent_scale import run_agent_scale
from steerable.errors import ConfigError
from steerable.lm.types import SamplingParams
from steerable.search.best_of_n import Greedy


@pytest.fixture
def proc():
    """``proc(greedy=False, **process_options)``: an agent process over the scripted lookup policy."""

    def make(greedy: bool = False, **kw) -> AgentProcess:
        params = SamplingParams(temperature=0.0) if greedy else SamplingParams(temperature=1.0)
        return AgentProcess(ScriptGenerator(lookup_policy), params, **kw)

    return make


# the fork's first key is the dead end: the greedy policy (first key) walks into it
TRAP = {"env": "lookup", "start": "k1", "table": {"k1": "k2 k3", "k2": "none", "k3": "k4", "k4": "42"}, "max_steps": 3}


def test_a_turn_ends_at_an_action_and_the_environment_writes_its_observation(proc):
    p = proc(greedy=True)
    cond = episode(TRAP)
    state = p.init(cond, 1)
    p.propose(state)
    assert p.preview(state) == ["get k1\n= k2 k3\n"] and state.turns == [1]
    p.propose(state)
    p.propose(state)
    assert p.preview(state)[0] == "get k1\n= k2 k3\nget k2\n= none\nA: 0" and p.is_terminal(state) == [True]
    assert cond.env.steps == 0  # the condition's environment is never stepped
    u = p.usage
    assert (u.env_steps, u.tool_calls, u.appended_tokens) == (2, 2, len("= k2 k3\n= none\n"))
    assert u.generated_tokens == len("get k1\nget k2\nA: 0")  # observations are not generated


def test_forks_carry_independent_environments_and_replay_counts_its_steps(proc):
    for fork, extra in (("clone", 0), ("replay", 3)):
        p = proc(fork=fork)
        state = p.init(episode(TRAP), 1, seed=0)
        p.propose(state)
        before = p.usage.env_steps
        forks = p.select(state, [0, 0, 0])
        assert p.usage.env_steps - before == extra  # replay resends the row's one action per copy
        assert [e.steps for e in forks.envs] == [1, 1, 1] and forks.envs[0] is not forks.envs[1]
        forks.envs[0].step("get k3")
        assert forks.envs[1].steps == 1 and state.envs[0].steps == 1


def test_tree_search_finds_the_live_branch_in_copies_and_commits_only_it(proc):
    p = proc()
    cond = episode(TRAP)
    greedy = Greedy().run(proc(greedy=True), None, 1, cond, seed=0)
    assert "A: 0" in greedy.text  # the greedy agent takes the dead end
    res = TreeSearch(branching=2, depth=3).run(p, OracleValue(), 8, cond, seed=0)
    assert res.text.endswith("A: 42") and res.answer == "42"
    assert real_steps(cond, res.text) == 3  # the live path only: get k1, k3, k4
    assert res.cost.env_steps > 3 and res.info["counts"]["node_evaluations"] <= 8 * res.info["counts"]["searches"]


def test_tree_search_keeps_to_its_node_budget_and_checks_its_options(proc):
    res = TreeSearch(branching=2, depth=1).run(proc(), OracleValue(), 1, episode(TRAP), seed=1)
    assert res.info["counts"]["node_evaluations"] == res.info["counts"]["searches"]  # one evaluation per search
    with pytest.raises(ConfigError, match="branching"):
        TreeSearch(branching=0)


def test_scale_rows_carry_success_and_cost_and_resume(proc, tmp_path):
    tasks = [TRAP, {**TRAP, "table": {**TRAP["table"], "k1": "k3 k2"}}]  # the second has the live key first
    mk = lambda greedy: proc(greedy=greedy)  # noqa: E731
    s = run_agent_scale(tasks, ["greedy", "tree"], [6], mk, OracleValue(), tmp_path, seed=0)
    rows = {r["method"]: r for r in s["rows"]}
    assert rows["greedy"]["success"] == 0.5 and rows["tree"]["success"] == 1.0
    assert rows["tree"]["real_steps"] == 3 and rows["tree"]["env_steps"] > 3
    assert {"generated_tokens", "env_steps", "tool_calls", "env_tokens", "seconds", "success_se"} <= set(rows["tree"])
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    again = run_agent_scale(tasks, ["greedy", "tree"], [6], mk, OracleValue(), tmp_path, seed=0)
    assert (tmp_path / "results.jsonl").read_text().splitlines() == lines and again == s  # nothing rerun


def test_a_replayed_fork_reaches_the_state_a_clone_holds(proc):
    for env_task in (TRAP, {**TRAP, "table": {**TRAP["table"], "k1": "k3 k2"}}):
        states = {}
        for fork in ("clone", "replay"):
            p = proc(greedy=True, fork=fork)
            s = p.init(episode(env_task), 1)
            while not p.is_terminal(s)[0]:
                p.propose(s)
            states[fork] = p.select(s, [0]).envs[0]
        seen = {k: (e.steps, e.done, e.solved, e.answered, e.revealed) for k, e in states.items()}
        assert seen["clone"] == seen["replay"]


def chains_policy(context: str, rng, greedy: bool) -> str:
    """Works the chains world exactly from what it sees: the last report (or the start) and the ops revealed
    since; a reader of the growing transcript and of the workspace alike."""
    import re

    lines = context.rstrip("\n").split("\n")
    last = lines[-1]
    if last == "= end":
        value = re.findall(r"S: (-?\d+)", context) or re.findall(r"from (\d+)", context)
        return f"A: {value[-1]}"
    if last.startswith("= ") and not context.endswith("S: " + last):
        start = re.findall(r"S: (-?\d+)", context) or re.findall(r"from (\d+)", context)
        acc = int(start[-1])
        for op, b in re.findall(r"([+\-*])(\d+)", last):
            acc = acc + int(b) if op == "+" else acc - int(b) if op == "-" else acc * int(b)
        return f"S: {acc}"
    return "next"


def test_the_workspace_rebuilds_each_rounds_context_and_the_environment_verifies_the_rounds():
    from steerable.agents.registry import make_method

    task = {"env": "chains", "start": 5, "ops": "+1*2-3+4+10*2-1"}
    proc = AgentProcess(ScriptGenerator(chains_policy), SamplingParams(temperature=0.0))
    seen = []
    gen = proc.generator
    start = gen.start
    gen.start = lambda prompts, n=1: (seen.append(prompts[0]), start(prompts, n))[1]
    _, ws = make_method("workspace")
    res = ws.run(proc, None, 1, episode(task), seed=0)
    assert res.answer == str((((5 + 1) * 2 - 3 + 4 + 10) * 2) - 1) and res.info["counts"]["rounds"] >= 4
    assert all(p.startswith("[next] Q: chain from 5\nS: ") for p in seen)  # every round: question and report
    assert max(map(len, seen)) < len("[next] Q: chain from 5\n") + 40  # the context never grows with the chain
    _, tr = make_method("transcript")
    grown = tr.run(proc, None, 1, episode(task), seed=0)
    assert grown.answer == res.answer and len(grown.text) > max(map(len, seen))
