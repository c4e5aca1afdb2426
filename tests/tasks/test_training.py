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
