"""The activation-depth methods run unchanged on the built-in mixture-of-experts model (Qwen3-MoE)."""

import pytest
import torch

from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams
from steerable.steer import Add, steer
from steerable.steer.controller import ControllerConfig, read_features, train_controller
from steerable.steer.extract import activations, mean_difference
from steerable.steer.refusal import RefusalConfig, select_refusal_direction
from steerable.tasks.builtin import requests
from steerable.tasks.builtin.contrast import contrast_set

GREEDY = SamplingParams(temperature=0, max_new_tokens=40)


@pytest.fixture(scope="module")
def moe():
    return LocalGenerator.from_pretrained("builtin:moe", device="cpu")


def _refusals(gen, prompts):
    return sum(requests.is_refusal(c.text) for c in gen.generate(prompts, GREEDY))


@pytest.mark.slow
def test_a_mean_difference_vector_makes_the_moe_model_refuse_benign_requests(moe):
    harmful, benign = contrast_set("refusal")
    acts = activations(moe.model, moe.tokenizer, harmful[::2] + benign[::2])[0]  # [layers, n, hidden]
    v = mean_difference(acts[:, : len(harmful[::2])], acts[:, len(harmful[::2]) :])  # [layers, hidden]
    probe = benign[1::6]
    assert _refusals(moe, probe) == 0
    with steer(moe.model, Add(v, layers=(3,), strength=1.0)):
        assert _refusals(moe, probe) >= len(probe) // 2
    assert _refusals(moe, probe) == 0  # restored on exit


@pytest.mark.slow
def test_the_refusal_direction_is_found_and_ablating_it_lowers_refusal_on_the_moe_model(moe):
    harmful, harmless = (x[::2] for x in contrast_set("refusal"))
    cfg = RefusalConfig(positions=(-1,), max_layer_frac=0.8, addition_strength=2.0)
    sel = select_refusal_direction(moe.model, moe.tokenizer, harmful, harmless, cfg)
    assert any(c.kept for c in sel.candidates)
    assert sel.subspace_scores[0] < sel.base_harmful_score


@pytest.mark.slow
def test_the_controller_trains_on_the_moe_model_and_tells_harmful_from_benign(moe):
    harmful, benign = contrast_set("jailbreak")
    direction = torch.randn(4, moe.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    ctl = train_controller(moe.model, moe.tokenizer, harmful[::4], benign[::4], direction,
                           ControllerConfig(epochs=2, alpha=1.0))  # fmt: skip
    s, _ = ctl.net(read_features(moe.model, moe.tokenizer, harmful[1::8] + benign[1::8], 4))
    n = len(harmful[1::8])
    assert torch.sigmoid(s[:n]).mean() > 0.5 > torch.sigmoid(s[n:]).mean()
