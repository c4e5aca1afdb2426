import random

from steerable.tasks.builtin.arithmetic import Problem
from steerable.tasks.builtin.train import batches
from steerable.tasks.builtin.train_prm import line_end_labels


def test_training_batches_learn_only_the_completion_and_eos(char_tokenizer):
    ids, mask, labels = next(batches(random.Random(0), char_tokenizer, batch_size=8))
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


def test_prm_training_runs_a_few_steps_and_writes_a_loadable_prm(tmp_path):
    import json

    from steerable.reward.prm import TokenClassifierPRM
    from steerable.tasks.builtin.arithmetic import eval_problems
    from steerable.tasks.builtin.train_prm import PRMTrainConfig, train_prm

    # policy solutions from a file (sampling is the slow part): right ones and one with a wrong step
    rows = []
    for split, seed in (("train", 1), ("calib", 2), ("eval", 3)):
        for i, p in enumerate(eval_problems("medium", 6, seed=seed)):
            sol = p.solution("verbose" if i % 2 else "concise")
            rows.append({"split": split, "temperature": 1.0, "prompt": p.prompt, "solution": sol})
            rows.append({"split": split, "temperature": 1.0, "prompt": p.prompt, "solution": "1+1=3\nA: 3"})
    sols = tmp_path / "solutions.jsonl"
    sols.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = PRMTrainConfig(
        out=str(tmp_path / "prm"),
        solutions=str(sols),
        extra_layers=1,
        steps=3,
        batch_size=4,
        eval_problems=10,
        eval_every=2,
        device="cpu",
    )
    rec = train_prm(cfg, progress=False)
    assert rec["optimizer_steps"] == 3 and rec["layers"] == 5 and len(rec["history"]) == 1
    assert set(rec["detection"]) >= {"skip", "repeat", "swap", "digit", "check"}
    prm = TokenClassifierPRM.from_pretrained(str(tmp_path / "prm"))
    scores = prm.score([rows[0]["prompt"]] * 2, [rows[0]["solution"], "1+1=3\n"])
    assert all(0.0 < s < 1.0 for s in scores)
    assert prm.info["optimizer_steps"] == 3
