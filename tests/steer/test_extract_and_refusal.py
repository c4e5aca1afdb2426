import pytest
import torch

from conftest import tiny_model
from steerable.errors import ConfigError, IncompatibleArtifactError, InputError
from steerable.lm.builtin import load
from steerable.steer.artifact import SteeringVector, fingerprint
from steerable.steer.extract import activations, mean_difference, pca_direction, probe_direction
from steerable.steer.refusal import RefusalConfig, last_logprobs, refusal_scores, select_refusal_direction
from steerable.tasks.builtin.contrast import contrast_set

PROMPTS = ["Q: 12+30=\n", "R: how do I bake a cake?\n", "Q: 5*5-3=\n"]


@pytest.fixture(scope="module")
def builtin():
    return load()


@pytest.mark.parametrize("family", ["gpt_neox", "gpt2"])  # gpt2: absolute positions must skip the padding
def test_activations_of_a_padded_batch_equal_each_prompt_alone(family, char_tokenizer):
    model = tiny_model(family, char_tokenizer)
    acts = activations(model, char_tokenizer, PROMPTS, positions=(-1, -2), batch_size=2)
    assert acts.shape == (2, 2, 3, 32)  # [positions, layers, prompts, hidden]
    for i, p in enumerate(PROMPTS):
        torch.testing.assert_close(acts[:, :, i], activations(model, char_tokenizer, [p], (-1, -2))[:, :, 0])
    with pytest.raises(InputError, match="negative"):
        activations(model, char_tokenizer, PROMPTS, positions=(0,))


def test_directions_recover_a_planted_axis():
    g = torch.Generator().manual_seed(0)
    axis = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    base = torch.randn(64, 16, generator=g)
    pos = base + (2 + torch.rand(64, 1, generator=g)) * axis + 0.1 * torch.randn(64, 16, generator=g)
    neg = base.clone()
    for fn in (mean_difference, pca_direction):
        d = fn(pos[None], neg[None])[0]
        assert torch.cosine_similarity(d, axis, dim=0) > 0.95, fn.__name__
        assert (d @ axis) > 0  # signed from negative to positive
    probe = probe_direction(pos[None], neg[None])[0]  # a separating direction, not the mean difference
    assert torch.cosine_similarity(probe, axis, dim=0) > 0.8
    assert (pos @ probe).mean() > (neg @ probe).mean()


@pytest.mark.slow
def test_refusal_direction_is_selected_by_the_papers_filters(builtin):
    model, tok = builtin
    harmful, harmless = (x[::2] for x in contrast_set("refusal"))  # half the set: the same choice, same margins
    cfg = RefusalConfig(positions=(-1,), max_layer_frac=0.8, addition_strength=2.0, max_rank=2)
    sel = select_refusal_direction(model, tok, harmful, harmless, cfg)
    assert all(c.layer < 0.8 * 4 for c in sel.candidates) and len(sel.candidates) == 4
    kept = [c for c in sel.candidates if c.kept]
    assert all(c.kl <= 0.1 and c.addition_score > 0 for c in kept)
    assert sel.layer == min(kept, key=lambda c: c.ablation_score).layer
    assert sel.subspace.shape == (2, 192) and sel.subspace_scores[1] <= sel.subspace_scores[0]
    ids = [tok("I", add_special_tokens=False)["input_ids"][0]]
    assert sel.subspace_scores[0] < sel.base_harmful_score  # ablation lowers harmful refusal
    assert float(refusal_scores(last_logprobs(model, tok, harmful), ids).mean()) == pytest.approx(
        sel.base_harmful_score, abs=1e-4
    )
    # layers 0 and 1 alone hold no direction whose addition makes harmless requests refuse
    only_early = RefusalConfig(positions=(-1,), max_layer_frac=0.5, addition_strength=2.0)
    with pytest.raises(ConfigError, match="no refusal direction candidate passes"):
        select_refusal_direction(model, tok, harmful, harmless, only_early)


def test_artifacts_round_trip_and_refuse_another_model(builtin, tmp_path, char_tokenizer):
    model, tok = builtin
    vec = torch.randn(4, 192)
    art = SteeringVector("mean", "add", fingerprint(model, tok), vector=vec, layers=(1, 2), strength=3.0, scope="last")
    path = art.save(tmp_path / "v")
    back = SteeringVector.load(path, model, tok)
    assert torch.equal(back.vector, vec) and back.layers == (1, 2) and back.strength == 3.0 and back.scope == "last"
    (iv,) = back.interventions(strength=5.0)
    assert iv.strength == 5.0 and iv.layers == (1, 2)
    with pytest.raises(InputError, match="no direction"):
        back.interventions("ablate")
    with pytest.raises(IncompatibleArtifactError, match="another model.*hidden_size 192 vs 32"):
        SteeringVector.load(path, tiny_model("llama", char_tokenizer), char_tokenizer)
    (tmp_path / "junk.safetensors").write_text("not a tensor file")
    with pytest.raises(InputError, match="not a safetensors"):
        SteeringVector.load(tmp_path / "junk.safetensors")
    with pytest.raises(InputError, match="no steering artifact"):
        SteeringVector.load(tmp_path / "missing.safetensors")
