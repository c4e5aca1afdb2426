"""Row operations on TRL's generated batch: rows keep their tokens, masks and per-row entries when moved."""

import pytest
import torch

from steerable.errors import ConfigError
from steerable.rl.batch import concat, select, token_level


def _batch(prompts, completions, flag):
    p_width, c_width = max(map(len, prompts)), max(map(len, completions))
    b = {
        "prompt_ids": torch.tensor([[0] * (p_width - len(p)) + p for p in prompts]),
        "prompt_mask": torch.tensor([[0] * (p_width - len(p)) + [1] * len(p) for p in prompts]),
        "completion_ids": torch.tensor([c + [0] * (c_width - len(c)) for c in completions]),
        "completion_mask": torch.tensor([[1] * len(c) + [0] * (c_width - len(c)) for c in completions]),
        "advantages": torch.tensor([[float(len(c))] * c_width for c in completions]),
        "off_policy": torch.tensor(flag),
        "progress": torch.tensor(0.5),
        "num_items_in_batch": torch.tensor(0),
    }
    return b


def test_join_pads_prompts_on_the_left_and_completions_on_the_right():
    a = _batch([[5, 6]], [[7]], [True])
    b = _batch([[1, 2, 3]], [[4, 4, 4]], [False])
    j = concat([a, b], pad_id=0)
    assert j["prompt_ids"].tolist() == [[0, 5, 6], [1, 2, 3]]
    assert j["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert j["completion_ids"].tolist() == [[7, 0, 0], [4, 4, 4]]
    assert j["completion_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert j["advantages"].tolist() == [[1.0, 0.0, 0.0], [3.0, 3.0, 3.0]]
    assert j["off_policy"].tolist() == [True, False] and j["progress"].item() == 0.5
    assert j["num_items_in_batch"].item() == 4  # recounted: the tokens the loss sees


def test_select_keeps_whole_rows_in_the_order_asked():
    b = _batch([[1], [2, 2], [3, 3, 3]], [[4], [5, 5], [6]], [False, True, False])
    s = select(b, [2, 0])
    assert s["prompt_ids"].tolist() == [[3, 3, 3], [0, 0, 1]] and s["completion_ids"].tolist() == [[6, 0], [4, 0]]
    assert s["off_policy"].tolist() == [False, False] and s["num_items_in_batch"].item() == 2


def test_an_entry_of_unknown_layout_is_an_error_not_a_row_left_behind():
    b = _batch([[1]], [[2]], [False])
    b["pixel_values"] = torch.zeros(1, 3, 4)
    with pytest.raises(ConfigError, match="pixel_values"):
        select(b, [0])


def test_sequence_advantages_become_token_advantages():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert token_level(torch.tensor([2.0, -1.0]), mask).tolist() == [[2.0] * 3, [-1.0] * 3]
    assert token_level(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), mask).tolist() == [[1.0, 2.0, 0.0], [3.0, 4.0, 0.0]]
