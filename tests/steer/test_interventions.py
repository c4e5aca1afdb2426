import pytest
import torch

from conftest import FAMILIES, tiny_model
from steerable.errors import ConfigError
from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams
from steerable.steer import Ablate, Add, Steering, decoder_layers, steer
from steerable.steer.layers import hidden_size

PROMPTS = ["Q: 12+30=\n", "R: how do I bake a cake?\n", "Q: 5*5-3=\n"]


def logits(model, tok, prompts=PROMPTS):
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**enc).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_layers_are_found_and_ablating_a_direction_makes_the_model_blind_to_it(family, char_tokenizer):
    model = tiny_model(family, char_tokenizer)
    layers = decoder_layers(model)
    assert len(layers) == model.config.num_hidden_layers
    d = hidden_size(model)
    base = logits(model, char_tokenizer)
    with steer(model, Add(torch.zeros(d), strength=3.0)):
        assert torch.equal(logits(model, char_tokenizer), base)  # a zero vector changes nothing
    r = torch.randn(d, generator=torch.Generator().manual_seed(0))
    with steer(model, Ablate(r)):
        ablated = logits(model, char_tokenizer)
    with steer(model, Add(5 * r, layers=(1,)), Ablate(r)):
        pushed = logits(model, char_tokenizer)
    assert not torch.allclose(ablated, base, atol=1e-4)
    torch.testing.assert_close(pushed, ablated, atol=1e-4, rtol=1e-4)
    assert torch.equal(logits(model, char_tokenizer), base)  # gone after the block


def test_leaving_through_an_exception_restores_the_model_exactly(char_tokenizer):
    model = tiny_model("llama", char_tokenizer)
    base = logits(model, char_tokenizer)
    with pytest.raises(RuntimeError, match="boom"), steer(model, Add(torch.ones(32), strength=5.0)):
        assert not torch.allclose(logits(model, char_tokenizer), base)
        raise RuntimeError("boom")
    assert torch.equal(logits(model, char_tokenizer), base)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
    persistent = Steering(model, [Add(torch.ones(32))]).attach()
    with pytest.raises(ConfigError, match="already attached"):
        persistent.attach()
    persistent.detach()
    assert torch.equal(logits(model, char_tokenizer), base)


@pytest.mark.parametrize("scope", ["all", "generated", "last", "prompt"])
def test_a_steered_batch_decodes_like_each_prompt_alone(scope, char_tokenizer):
    model = tiny_model("qwen2", char_tokenizer)
    gen = LocalGenerator(model, char_tokenizer)
    v = torch.randn(32, generator=torch.Generator().manual_seed(1))
    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    with steer(model, Add(v, layers=(0, 1), strength=4.0, scope=scope)):
        batch = gen.generate(PROMPTS, params)
        alone = [gen.generate([p], params)[0] for p in PROMPTS]
    plain = gen.generate(PROMPTS, params)
    assert [c.token_ids for c in batch] == [c.token_ids for c in alone]
    for b, a in zip(batch, alone, strict=True):
        torch.testing.assert_close(torch.tensor(b.logprobs), torch.tensor(a.logprobs), atol=1e-4, rtol=1e-4)
    assert [c.token_ids for c in batch] != [c.token_ids for c in plain]


def test_scopes_touch_the_positions_they_name_and_never_padding(char_tokenizer):
    model = tiny_model("llama", char_tokenizer)
    seen = {}
    norm = decoder_layers(model)[1].input_layernorm  # sees layer 1's input after the steering hooks
    norm.register_forward_pre_hook(lambda m, args: seen.__setitem__("h", args[0].clone()))
    enc = char_tokenizer(PROMPTS, return_tensors="pt", padding=True)  # left padding
    pad = enc["attention_mask"] == 0
    assert pad.any()
    with torch.no_grad():
        model(**enc)
        base = seen["h"]
        with steer(model, Add(torch.ones(32), layers=(1,), strength=10.0, scope="all")):
            model(**enc)
    moved = (seen["h"] - base).abs().sum(-1) > 0  # [batch, time]
    assert torch.equal(moved, ~pad)
    with torch.no_grad(), steer(model, Add(torch.ones(32), layers=(1,), strength=10.0, scope="generated")):
        model(**enc)  # a prefill: every token is prompt
    assert torch.equal(seen["h"], base)


def test_bad_steering_is_a_clear_error(char_tokenizer):
    model = tiny_model("llama", char_tokenizer)
    with pytest.raises(ConfigError, match="does not fit"):
        steer(model, Add(torch.ones(31)))
    with pytest.raises(ConfigError, match="layer 7 does not exist"):
        steer(model, Add(torch.ones(32), layers=(7,)))
    with pytest.raises(ConfigError, match="scope"):
        steer(model, Add(torch.ones(32), scope="middle"))
    with pytest.raises(ConfigError, match="weights"):
        steer(model, Add(torch.ones(32), layers=(0, 1), weights=(1.0,)))
    with pytest.raises(ConfigError, match="zero direction"):
        steer(model, Ablate(torch.zeros(32)))
    with pytest.raises(ConfigError, match="layers_path"):
        decoder_layers(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="no module list"):
        decoder_layers(model, "model.nothing")
