import random

import pytest

from steerable.tasks.builtin.arithmetic import Problem
from steerable.tasks.builtin.train import Batches
from steerable.tasks.builtin.train_prm import line_end_labels


def test_training_batches_learn_only_the_completion_and_eos(char_tokenizer):
    ids, mask, labels = next(Batches(random.Random(0), char_tokenizer, batch_size=8))
    for r in range(ids.shape[0]):
        n = int(mask[r].sum())
        row, lab = ids[r, :n].tolist(), labels[r, :n].tolist()
        text = char_tokenizer.decode(row, skip_special_tokens=True)
        prompt_len = len(char_tokenizer(text.split("\n", 1)[0] + "\n")["input_ids"])
        assert lab[:prompt_len] == [-100] * prompt_len
        assert lab[prompt_len:] == row[prompt_len:]
        assert row[-1] == char_tokenizer.eos_token_id
        assert labels[r, n:].eq(-100).all() and ids[r, n:].eq(char_tokenizer.pad_token_id).all()


def test_prm_labels_sit_on_each_line_end_and_follow_the_checker(char_tokenizer):
    p = Problem((37, 48, 19), ("+", "-"))
    sol = "37+48=86\ncheck 37+48=86\n86-19=67\nA: 67"
    ids, ends, flags = line_end_labels(char_tokenizer, p.prompt, sol)
    assert [char_tokenizer.decode([ids[e]]) for e in ends] == ["\n", "\n", "\n", "7"]
    assert flags == [False, False, False, False]
    _, _, good = line_end_labels(char_tokenizer, p.prompt, p.solution("verbose"))
    assert good == [True] * 5


@pytest.mark.slow
def test_prm_training_fits_the_head_and_writes_a_loadable_prm(tmp_path):
    import json

    from steerable.reward.prm import TokenClassifierPRM
    from steerable.tasks.builtin.arithmetic import eval_problems
    from steerable.tasks.builtin.train_prm import PRMTrainConfig, train_prm

    # policy solutions from a file (sampling is the slow part): right ones and wrong ones
    rows = []
    for split, seed in (("train", 1), ("eval", 3)):
        for i, p in enumerate(eval_problems("medium", 8, seed=seed)):
            sol = p.solution("verbose" if i % 2 else "concise")
            rows.append({"split": split, "temperature": 1.0, "prompt": p.prompt, "solution": sol})
            wrong = sol.replace("=", "=1", 1)  # a wrong first result, then the rest as written
            rows.append({"split": split, "temperature": 1.0, "prompt": p.prompt, "solution": wrong})
    sols = tmp_path / "solutions.jsonl"
    sols.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = PRMTrainConfig(
        out=str(tmp_path / "prm"), solutions=str(sols), eval_problems=10, device="cpu", iters=50, calc_steps=0
    )
    rec = train_prm(cfg, progress=False)
    assert rec["train_steps"] > 16 and rec["fitted_parameters"] == 5 and rec["lbfgs_iterations"] >= 1
    assert rec["calculator"] is None
    assert rec["step_auroc"] > 0.9  # the wrong first results are tokens the policy would not write
    assert set(rec["detection"]) >= {"skip", "repeat", "swap", "digit", "check"}
    prm = TokenClassifierPRM.from_pretrained(str(tmp_path / "prm"))
    p = rows[0]["prompt"]
    right, wrong = prm.score(
        [p, p], [rows[0]["solution"].split("\n")[0] + "\n", rows[1]["solution"].split("\n")[0] + "\n"]
    )
    assert 0.0 < wrong < right < 1.0
    assert prm.info["train_steps"] == rec["train_steps"]


def test_prm_token_classes_need_one_token_per_digit_and_operator():
    from steerable.errors import ConfigError
    from steerable.tasks.builtin.train_prm import build_model

    class WordTokenizer:  # knows no single-character tokens: every digit maps to <unk>
        unk_token_id = 3

        def convert_tokens_to_ids(self, token: str) -> int:
            return self.unk_token_id

    with pytest.raises(ConfigError, match="no single token for each of '0123456789'"):
        build_model(None, WordTokenizer())


@pytest.mark.slow
def test_prm_training_with_a_calculator_fits_two_more_features(tmp_path):
    import json

    from steerable.reward.prm import TokenClassifierPRM
    from steerable.tasks.builtin.arithmetic import eval_problems
    from steerable.tasks.builtin.train_prm import PRMTrainConfig, train_prm

    rows = [
        {"split": split, "temperature": 1.0, "prompt": p.prompt, "solution": p.solution()}
        for split, seed in (("train", 1), ("eval", 3))
        for p in eval_problems("medium", 6, seed=seed)
    ]
    rows += [{**r, "solution": r["solution"].replace("=", "=1", 1)} for r in rows]
    sols = tmp_path / "solutions.jsonl"
    sols.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = PRMTrainConfig(
        out=str(tmp_path / "prm"),
        solutions=str(sols),
        eval_problems=10,
        device="cpu",
        iters=20,
        calc_steps=20,
        calc_batch=16,
        calc_width=32,
    )
    rec = train_prm(cfg, progress=False)
    assert rec["fitted_parameters"] == 7 and list(rec["head"])[4:6] == ["sum_calc", "min_calc"]
    assert rec["calculator"]["steps"] == 20 and 0.0 <= rec["calculator"]["held_out_line_accuracy"] <= 1.0
    prm = TokenClassifierPRM.from_pretrained(str(tmp_path / "prm"))
    assert prm.model.calc is not None


def test_the_calculator_learns_what_a_line_writes_after_its_equals_sign():
    from transformers import AutoTokenizer

    from steerable.lm.loading import builtin_path
    from steerable.tasks.builtin.calculator import encode

    tok = AutoTokenizer.from_pretrained(builtin_path())
    ids, target = encode(tok, ["check 37+48=85", "5*9=45"])
    text = [tok.convert_ids_to_tokens(row) for row in ids.tolist()]
    assert "".join(text[0][1:]) == "check 37+48=85\n" and text[0][0] == tok.bos_token
    assert "".join(t for t, m in zip(text[0], target[0].tolist(), strict=True) if m) == "85\n"
    assert "".join(t for t, m in zip(text[1], target[1].tolist(), strict=True) if m) == "45\n"


def test_calculator_lines_are_the_worlds_steps_a_third_in_the_check_form():
    import random

    from steerable.tasks.builtin import arithmetic
    from steerable.tasks.builtin.calculator import lines

    train = lines(random.Random(0), 400)
    held = lines(random.Random(1), 400, held_out=True)
    assert sum(t.startswith("check ") for t in train) in range(80, 190)
    for text in train + held:
        a, rest = text.removeprefix("check ").split("=")[0], text.split("=")[1]
        op = next(c for c in "+-*" if c in a[1:])
        x, y = a.split(op, 1)
        assert arithmetic.apply(int(x), op, int(y)) == int(rest)


def test_a_batch_stream_resumed_from_its_state_draws_what_the_uninterrupted_one_draws(char_tokenizer):
    import torch

    def stream(seed: int = 0) -> Batches:
        return Batches(random.Random(seed), char_tokenizer, batch_size=3, group=4)

    whole = stream()
    straight = [next(whole) for _ in range(9)]
    for taken in (5, 8):  # mid-group and at a group's end
        first = stream()
        for _ in range(taken):
            next(first)
        later = stream(seed=99)
        later.load_state_dict(first.state_dict())
        for want in straight[taken:]:
            assert all(torch.equal(a, b) for a, b in zip(next(later), want, strict=True))


def test_the_built_in_trainer_stopped_by_ctrl_c_resumes_to_the_same_weights(tmp_path, monkeypatch, capsys):
    import json
    import signal

    from transformers import LlamaForCausalLM

    from steerable.errors import SteerableError
    from steerable.tasks.builtin.train import TrainConfig, train

    def cfg(out):
        return TrainConfig(out=str(out), steps=6, batch_size=3, eval_every=0, threads=1)

    train(cfg(tmp_path / "a"), progress=False)
    forward, calls, interrupt = LlamaForCausalLM.forward, [], [3]

    def counted(self, *a, **kw):
        calls.append(1)
        if len(calls) in interrupt:
            signal.raise_signal(signal.SIGINT)  # during step 3, mid-way through a group of 4 batches
        return forward(self, *a, **kw)

    monkeypatch.setattr(LlamaForCausalLM, "forward", counted)
    with pytest.raises(SteerableError, match="interrupted at step 3"):
        train(cfg(tmp_path / "b"), progress=False)
    calls.clear()
    interrupt.clear()
    record = train(cfg(tmp_path / "b"), progress=False)
    assert "resuming at step 3" in capsys.readouterr().err and len(calls) == 3  # steps 4 to 6 only
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert record["final_loss_ema"] == json.loads((tmp_path / "a" / "training.json").read_text())["final_loss_ema"]
