import random

import pytest

from steerable.errors import InputError
from steerable.tasks.agent import data
from steerable.tasks.agent.calc import CalcError, evaluate
from steerable.tasks.agent.envs import OUT_OF_STEPS, make_env, replay
from steerable.tasks.agent.train import encode_demo


def test_the_calculator_parses_arithmetic_with_precedence_and_never_evals():
    assert evaluate("37*48") == 1776
    assert evaluate("2+3*4") == 14 and evaluate("(2+3)*4") == 20 and evaluate("-3*-2") == 6
    for bad, why in [
        ("__import__('os')", "unsupported character"),
        ("1/2", "unsupported character"),
        ("9" * 14, "exceeds"),
        ("(" * 9 + "1" + ")" * 9, "nested"),
        ("1" + "+1" * 40, "longer"),
        ("2*", "ends early"),
        ("(1+2", "missing"),
        ("", "empty"),
        ("99999999*99999999", "exceeds"),
    ]:
        with pytest.raises(CalcError, match=why):
            evaluate(bad)


def test_a_calculator_episode_answers_tool_lines_and_judges_the_answer():
    env = make_env("builtin:calculator")
    assert env.reset({"env": "calculator", "expression": "37*48+19"}) == "[calc] Q: 37*48+19=\n"
    assert env.step("37*48=1776") is None and env.steps == 0  # a reasoning line is not an action
    assert env.step(">>> 37*48").text == "= 1776" and env.steps == 1
    assert env.step(">>> 1/0").text.startswith("= error: unsupported character")
    obs = env.step("A: 1795")
    assert obs.done and env.solved and env.progress() == 1.0
    text_only = make_env("calculator")
    assert text_only.reset({"env": "calculator", "expression": "2+3"}, tools=False) == "Q: 2+3=\n"
    assert text_only.step(">>> 2+3") is None  # no tool offered: an action line is just text
    with pytest.raises(InputError, match="not the chain's value"):
        make_env("calculator").reset({"env": "calculator", "expression": "2+3", "answer": 6})


LOOKUP = {
    "env": "lookup",
    "start": "k1",
    "table": {"k1": "k2 k3", "k2": "none", "k3": "k4", "k4": "42"},
    "max_steps": 3,
}


def test_lookup_reveals_cells_forks_and_caps_its_steps():
    env = make_env("lookup")
    assert env.reset(LOOKUP) == "[get] Q: find k1\n" and env.answer == "42"
    assert env.step("get k1").text == "= k2 k3" and env.progress() == 0.5
    fork = env.clone()
    assert fork.step("get k2").text == "= none" and fork.progress() == 0.0  # a dead end is off track
    assert env.steps == 1 and env.revealed == ["k1"]  # the clone shares nothing
    assert env.step("get k9").text == "= no such key"
    assert env.step("get k3").text == "= k4" and env.steps == 3
    assert env.progress() == 0.0  # on the live path, but the wasted step left none for k4
    env2 = make_env("lookup")
    env2.reset(LOOKUP)
    for line in ("get k1", "get k2", "get k3"):
        env2.step(line)
    assert env2.step("get k4").text == OUT_OF_STEPS and env2.done and not env2.solved


def test_a_maze_moves_walls_and_goal():
    env = make_env("maze")
    env.reset({"env": "maze", "grid": "S.#../..#../.G.../...../.....", "max_steps": 5})
    assert env.step("go u").text == "= wall" and env.progress() == 0.0  # no move: not on track
    assert env.step("go d").text == "= 1,0" and env.progress() == 0.5
    assert env.step("go d").text == "= 2,0"
    assert env.step("go r").text == "= goal" and env.solved and env.done
    with pytest.raises(InputError, match="cannot be reached"):
        make_env("maze").reset({"env": "maze", "grid": "S#.../##.../....G/...../....."})


def test_chains_serve_three_operations_a_round_and_track_the_reports():
    env = make_env("chains")
    env.reset({"env": "chains", "start": 5, "ops": "+1*2-3+4"})
    assert env.answer == str(((5 + 1) * 2 - 3) + 4)
    assert env.step("next").text == "= +1*2-3"
    env.step("S: 9")
    assert env.progress() == 0.5
    assert env.step("next").text == "= +4"
    env.step("S: 14")  # wrong: 13
    assert env.progress() == 0.0
    assert env.step("next").text == "= end"


@pytest.mark.parametrize("env", ["calculator", "lookup", "maze", "chains"])
@pytest.mark.parametrize("split", ["easy", "hard"])
def test_every_demonstration_solves_its_task_by_replay(env, split):
    rng = random.Random(0)
    for task in data.split_tasks(env, split, 8, seed=3):
        if env == "calculator":
            demos = [(task, data.calc_demo(task, s)) for s in ("text", "tool", "mixed")]
        elif env == "lookup":
            roomy = {**task, "max_steps": 64}  # the random depth-first demo may take a dead end first
            demos = [(roomy, data.lookup_demo(roomy, rng))]
        elif env == "maze":
            demos = [(task, data.maze_demo(task, rng))]
        else:
            demos = [(task, data.chains_demo(task))]
        for posed, demo in demos:
            e = make_env(env)
            assert e.reset(posed, tools=not demo[0][0].startswith("Q:")) == demo[0][0]
            assert replay(e, "".join(t for t, _ in demo[1:])).solved


def test_held_out_tasks_never_reach_training_and_splits_are_reproducible():
    rng = random.Random(1)
    assert data.split_tasks("maze", "hard", 5, seed=2) == data.split_tasks("maze", "hard", 5, seed=2)
    held = {str(t) for env in data.SPLIT_MAKERS for s in data.SPLITS for t in data.split_tasks(env, s, 20)}
    assert all(data.held_out(eval(t)) for t in held)  # noqa: S307 - our own repr of dicts
    for _ in range(300):
        demo = data.training_demo(rng)
        assert demo[0][1] is False and any(trained for _, trained in demo)


def test_environment_tokens_carry_no_loss(char_tokenizer):
    demo = data.calc_demo({"env": "calculator", "expression": "12+30*45", "answer": 1890}, "tool")
    ids, labels = encode_demo(demo, char_tokenizer)
    text = char_tokenizer.decode(ids[1:])
    trained = char_tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
    assert text.startswith("[calc] Q: 12+30*45=\n>>> 12+30\n= 42\n")
    assert trained == ">>> 12+30\n>>> 42*45\nA: 1890" + char_tokenizer.eos_token  # no prompt, no "= ..." line
    assert labels[-1] == char_tokenizer.eos_token_id


def test_a_task_file_is_checked_line_by_line(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"env": "lookup", "start": "k1", "table": {"k1": "7"}}\n{"env": "maze", "grid": "S"}\n')
    with pytest.raises(InputError, match=r"t.jsonl:2: task field 'grid'"):
        data.read_tasks(f)
    f.write_text('{"env": "lookup", "start": "k1", "table": {"k1": "7"}}\n')
    assert data.read_tasks(f)[0]["answer"] == 7


def test_a_training_mix_is_named_or_spelled_out_and_checked():
    from steerable.errors import ConfigError
    from steerable.tasks.agent.train import AgentTrainConfig, parse_mix

    assert parse_mix("agent") == data.MIX and parse_mix("plan") == data.PLAN_MIX
    assert parse_mix("iad=1,chains=0.5") == (("iad", 1.0), ("chains", 0.5))
    for bad in ("iad", "iad=0", "nope=1", "iad=1,iad=2", "iad=x"):
        with pytest.raises(ConfigError, match="--mix"):
            AgentTrainConfig(out="x", mix=bad)
    rng = random.Random(0)
    kinds = {data.kind_demo(k, rng)[0][0].split(" Q:")[0] for k in ("chains", "workspace", "iad")}
    assert kinds == {"[next]"}  # all three are chains demonstrations
    assert data.training_demo(random.Random(1)) == data.training_demo(random.Random(1), data.MIX)


def test_fine_tuning_starts_from_a_model_of_the_same_vocabulary(tmp_path, char_tokenizer):
    from steerable.errors import ConfigError
    from steerable.tasks.agent.train import initial_model

    model = initial_model("builtin", char_tokenizer)
    assert model.config.max_position_embeddings >= 1024 and model.dtype.is_floating_point
    with pytest.raises(ConfigError, match="not a model directory"):
        initial_model(str(tmp_path), char_tokenizer)
