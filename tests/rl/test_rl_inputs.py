"""Inputs computed for the estimators: merged extra rows train exactly as their duplicates would."""

import pytest
import torch

from steerable.rl.algos import POLICY_LOSSES, RLConfig
from steerable.rl.inputs import ExtraRows


def test_identical_extra_rows_merge_into_one_row_weighted_by_their_count():
    prompts = [[1, 2], [1, 2], [1, 2], [3]]
    answers = [[7, 8], [7, 8], [9], [7, 8]]
    adv = torch.tensor([0.5, 0.5, -1.0, 0.25])
    m = ExtraRows.merged(prompts, answers, adv)
    assert m.prompt_ids == [[1, 2], [1, 2], [3]] and m.completion_ids == [[7, 8], [9], [7, 8]]
    assert m.advantages.tolist() == [0.5, -1.0, 0.25] and m.weights.tolist() == [2.0, 1.0, 1.0]
    # a token-mean loss over the merged rows, weights in the mask, equals the loss over the duplicates
    logp = torch.tensor([[-0.1, -0.2], [-0.3, -0.4], [-0.5, 0.0]])
    old = logp + torch.tensor([[0.3, -0.2], [0.0, 0.1], [-0.4, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    merged, _ = POLICY_LOSSES["ppo"](logp, old, m.advantages, mask * m.weights[:, None], RLConfig())
    dup = [0, 0, 1, 2]
    full, _ = POLICY_LOSSES["ppo"](logp[dup], old[dup], m.advantages[dup], mask[dup], RLConfig())
    assert merged.item() == pytest.approx(full.item())
    apart = ExtraRows.merged([[1], [1]], [[2], [2]], torch.tensor([0.0, 1.0]))  # judged against different pools
    assert apart.weights.tolist() == [1.0, 1.0] and apart.advantages.tolist() == [0.0, 1.0]
