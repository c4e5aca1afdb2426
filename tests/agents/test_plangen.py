import json
import math

import pytest
from scripted import ScriptGenerator, lookup_policy

from steerable.agents.plangen import (
    ArmStats,
    PlanGEN,
    bucket,
    choose,
    constraints,
    fit_prior,
    kept_prefix,
    turns,
    ucb_scores,
)
from steerable.agents.process import AgentProcess, episode
from steerable.agents.registry import make_method
from steerable.agents.tree import OracleValue
from steerable.bench.agent_scale import run_agent_scale
from steerable.errors import ConfigError
from steerable.lm.types import SamplingParams
from steerable.tasks.agent.envs import replay

# the fork's first key is the dead end; the scripted policy picks a fork's key at random when sampling
TRAP = {"env": "lookup", "start": "k1", "table": {"k1": "k2 k3", "k2": "none", "k3": "k4", "k4": "42"}, "max_steps": 3}
STRAIGHT = {"env": "lookup", "start": "k1", "table": {"k1": "k2", "k2": "17"}, "max_steps": 4}
LONG = {"env": "lookup", "start": "k5", "table": {"k5": "k6", "k6": "k7", "k7": "k8", "k8": "55"}, "max_steps": 6}


def hopeless_on_long(context, rng, greedy):
    """The lookup policy, except that it answers a wrong number at once when asked for k5 (the LONG task)."""
    return "A: 1" if "find k5" in context else lookup_policy(context, rng, greedy)


def proc(policy=lookup_policy):
    return AgentProcess(ScriptGenerator(policy), SamplingParams(temperature=1.0))


def test_ucb_matches_the_modified_formula_by_hand():
    stats = {"bon": ArmStats(n=2, q=1.5, recoveries=1), "pf": ArmStats(n=1, q=0.5), "beam": ArmStats()}
    prior = {"bon": 0.4, "pf": 0.8, "beam": 0.1}
    s = ucb_scores(stats, prior, lambda_prior=1.0, lambda_div=0.1, lambda_rec=0.1)
    # T = 3: bon 0.75 + sqrt(2 ln 3 / 2) + 0.4 + 0.1/3 + 0.1 * 1/2; pf 0.5 + sqrt(2 ln 3) + 0.8 + 0.1/2 + 0
    assert s["bon"] == pytest.approx(0.75 + 1.048147 + 0.4 + 0.033333 + 0.05, abs=1e-5)
    assert s["pf"] == pytest.approx(0.5 + 1.482304 + 0.8 + 0.05, abs=1e-5)
    assert math.isinf(s["beam"])  # untried: tried before any other
    assert choose(stats, prior, (1.0, 0.1, 0.1)) == "beam"
    stats["beam"] = ArmStats(n=1, q=0.0)
    assert choose(stats, prior, (1.0, 0.1, 0.1)) == "pf"  # 2.97 over bon's 2.37 and beam's 1.87 (T = 4)


def test_untried_arms_go_in_the_order_of_their_prior():
    stats = {a: ArmStats() for a in ("bon", "beam", "pf", "refine")}
    assert choose(stats, {"pf": 0.9, "bon": 0.5}, (1.0, 0.1, 0.1)) == "pf"
    assert choose(stats, {}, (1.0, 0.1, 0.1)) == "bon"  # a uniform prior: table order


def test_the_constraint_agent_reads_the_instance_features():
    assert constraints(TRAP) == {"env": "lookup", "max_steps": 3, "hops": 3, "forks": 1}
    assert bucket(constraints(TRAP)) == "lookup:short" and bucket(constraints(LONG)) == "lookup:long"
    maze = {"env": "maze", "grid": "S.#../...../...../...../....G", "max_steps": 9}
    c = constraints(maze)
    assert (c["distance"], c["walls"], bucket(c)) == (8, 1, "maze:far")


def test_the_loop_stops_once_a_plan_passes_the_threshold():
    res = PlanGEN(width=4).run(proc(), OracleValue(), 10_000, episode(TRAP), seed=0)
    assert res.info["counts"]["threshold_reached"] == 1 and res.text.endswith("A: 42")
    assert res.info["counts"]["rounds"] == len(res.info["scores"]) and res.info["scores"][-1] == 1.0
    assert all(s < 0.9 for s in res.info["scores"][:-1])  # no round after the passing one


def test_without_a_passing_plan_rounds_go_on_until_the_tokens_are_spent():
    res = PlanGEN(width=2, prior="uniform").run(proc(hopeless_on_long), OracleValue(), 40, episode(LONG), seed=0)
    c = res.info["counts"]
    assert c["threshold_reached"] == 0 and c["rounds"] > 1
    assert 40 <= res.cost.generated_tokens < 40 + 2 * len("A: 1")  # the last round shrinks to what is left
    assert sum(c[f"chose_{a}"] for a in ("bon", "beam", "pf", "refine")) == c["rounds"]
    assert res.info["arms"][:4] == ["bon", "beam", "pf", "refine"]  # every arm tried once first (uniform prior)


def test_refinement_keeps_the_verified_prefix_and_regenerates_the_rest():
    cond = episode(TRAP)
    failed = "get k1\n= k2 k3\nget k2\n= none\nA: 0"
    assert turns(failed) == ["get k1\n= k2 k3\n", "get k2\n= none\n", "A: 0"]
    kept = kept_prefix(OracleValue(), cond, failed, keep=0.5)
    assert kept == "get k1\n= k2 k3\n"  # the turn into the dead end is rated 0
    contexts = []

    def recording(context, rng, greedy):
        contexts.append(context)
        return lookup_policy(context, rng, greedy)

    text = PlanGEN(arms="refine")._run_arm("refine", proc(recording), OracleValue(), cond, 4, failed, seed=3)
    assert text.startswith(kept) and replay(cond.env, text).solved
    assert contexts and all(c.startswith(cond.prompt + kept) for c in contexts)  # the kept turns are not redone
    assert cond.env.steps == 0


def test_the_prior_is_fitted_per_bucket_and_read_back(tmp_path):
    fitted = fit_prior(proc(hopeless_on_long), OracleValue(), [STRAIGHT, LONG], width=2)
    assert fitted["table"] == {"lookup:short": dict.fromkeys(("bon", "beam", "pf", "refine"), 1.0),
                               "lookup:long": dict.fromkeys(("bon", "beam", "pf", "refine"), 0.0)}  # fmt: skip
    assert fitted["tasks"] == {"lookup:short": 1, "lookup:long": 1}
    path = tmp_path / "prior.json"
    path.write_text(json.dumps({"table": {"lookup:short": {"pf": 0.9, "bon": 0.2}}}))
    m = PlanGEN(prior=str(path))
    assert m.prior_of(TRAP) == {"bon": 0.2, "beam": 0.0, "pf": 0.9, "refine": 0.0}
    res = m.run(proc(), OracleValue(), 10_000, episode(TRAP), seed=1)
    assert res.info["arms"][0] == "pf"  # the prior picks the first algorithm


def test_the_builtin_prior_table_ships_and_loads():
    m = PlanGEN(prior="builtin")
    assert set(m.table) >= {"lookup:short", "lookup:long", "maze:near", "maze:far"}
    assert all(0.0 <= p <= 1.0 for row in m.table.values() for p in row.values())


@pytest.mark.parametrize(
    "options, match",
    [({"arms": "bon+mcts"}, "arms"), ({"arms": "bon+bon"}, "arms"), ({"width": 0}, "width"),
     ({"threshold": 2}, "threshold"), ({"prior": "no-such.json"}, "prior")],
)  # fmt: skip
def test_bad_options_are_one_line_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        make_method("plangen:" + ":".join(f"{k}={v}" for k, v in options.items()))


def test_scale_rows_count_the_choices_and_rounds(tmp_path):
    s = run_agent_scale([TRAP, STRAIGHT], ["plangen", "plangen:arms=pf"], [200], lambda g: proc(), OracleValue(),
                        tmp_path, seed=0)  # fmt: skip
    rows = {r["method"]: r for r in s["rows"]}
    assert rows["plangen"]["success"] == 1.0 and rows["plangen:arms=pf"]["counts"]["chose_pf"] >= 2
    assert rows["plangen"]["counts"]["threshold_reached"] == 2


def test_a_small_real_run_on_the_shipped_agent_model():
    from steerable.lm.local import LocalGenerator
    from steerable.tasks.agent.data import split_tasks

    gen = LocalGenerator.from_pretrained("builtin:agent", device="cpu", chat_template="never")
    p = AgentProcess(gen, SamplingParams(temperature=1.0, top_p=0.95))
    for task in split_tasks("maze", "hard", 1) + split_tasks("lookup", "hard", 1):
        res = PlanGEN().run(p, OracleValue(), 64, episode(task), seed=0)
        assert res.cost.generated_tokens > 0 and res.info["counts"]["rounds"] >= 1
        assert res.info["counts"]["threshold_reached"] == int(replay(episode(task).env, res.text).solved)


def test_particle_filtering_never_asks_the_verifier_to_score_nothing():
    class EagerStrict(OracleValue):
        """Rates any answered plan 1 (so an early answer takes every copy at resampling); fails on no plans, as
        the value head's tokenizer does."""

        def score(self, conds, samples):
            assert samples, "asked to score no plans"
            self.calls += len(samples)
            return [1.0 if "A:" in s else 0.5 for s in samples]

    for seed in range(4):  # the dead-end rows answer a turn before the live ones: then no row is left to score
        res = PlanGEN(arms="pf", width=4).run(proc(), EagerStrict(), 10_000, episode(TRAP), seed=seed)
        assert res.info["counts"]["threshold_reached"] == 1
