import math

import pytest
import torch
from torch import nn

from conftest import tiny_model
from steerable.errors import ConfigError, IncompatibleArtifactError, InputError
from steerable.steer.artifact import load_steering
from steerable.steer.fingerprint import fingerprint
from steerable.steer.rice import Rice, RouterBoost, expert_npmi, pick_experts, routers

MOE_FAMILIES = ["qwen3_moe", "mixtral", "olmoe", "gpt_oss"]
IDS = torch.tensor([[1, 54, 31, 5, 22, 16, 23, 34, 4, 72, 77, 74, 72, 80]])


def _routing(model, ids=IDS):
    """Each router's (weights, indices) on ``ids``, read by a hook registered after any steering hook."""
    got = {}
    hooks = [r.register_forward_hook(lambda m, a, o, i=i: got.__setitem__(i, (o[1], o[2]))) for i, r in
             enumerate(routers(model)) if r is not None]  # fmt: skip
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    for h in hooks:
        h.remove()
    return logits, got


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_after_multiplies_the_chosen_experts_weights_and_keeps_the_choice(family, char_tokenizer):
    model = tiny_model(family, char_tokenizer)
    base_logits, base = _routing(model)
    for layer, expert in ((0, 1), (1, 3)):  # one at a time: a boost at layer 0 changes what layer 1 reads
        with RouterBoost(model, [(layer, expert)], 4.0, "after") as boost:
            logits, got = _routing(model)
        (w0, i0), (w1, i1) = base[layer], got[layer]
        share = float((i0 == expert).any(-1).float().mean())
        assert boost.chosen_share() == {(layer, expert): pytest.approx(share)}
        assert torch.equal(i0, i1)  # after the top-k: the same experts are chosen
        hit = i0 == expert
        assert hit.any(), "the test needs the expert chosen somewhere"
        torch.testing.assert_close(w1[hit], 4.0 * w0[hit])
        torch.testing.assert_close(w1[~hit], w0[~hit])
        assert not torch.allclose(logits, base_logits)
    after_exit, _ = _routing(model)
    assert torch.equal(after_exit, base_logits)  # nothing left behind
    assert all(not r._forward_hooks for r in routers(model))


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_before_chooses_the_top_k_of_the_boosted_softmax(family, char_tokenizer):
    model = tiny_model(family, char_tokenizer)
    base_logits, _ = _routing(model)
    with RouterBoost(model, [(0, 2)], 1.0, "before"):  # beta 1 is the model itself, bit for bit in the choice
        logits, _ = _routing(model)
    torch.testing.assert_close(logits, base_logits)
    logs = {}
    r0 = routers(model)[0]
    h = r0.register_forward_hook(lambda m, a, o: logs.update(logits=o[0]))
    with RouterBoost(model, [(0, 2)], 1000.0, "before") as boost:
        _, got = _routing(model)
    h.remove()
    assert boost.chosen_share() == {(0, 2): 1.0}  # the boost fired on every token
    weights, idx = got[0]
    assert bool((idx == 2).any(-1).all())  # a huge beta: expert 2 is chosen for every token
    p = torch.softmax(logs["logits"].float(), -1)
    p[:, 2] *= 1000.0
    top, want = torch.topk(p, idx.shape[-1], dim=-1)
    assert torch.equal(idx, want)
    if family != "olmoe":  # olmoe keeps the probabilities as they are; the others renormalise the top-k
        top = top / top.sum(-1, keepdim=True)
    torch.testing.assert_close(weights.float(), top)
    with RouterBoost(model, [(0, 2)], 0.0, "before") as boost:  # beta 0 removes the expert
        _, got = _routing(model)
    assert not bool((got[0][1] == 2).any()) and boost.chosen_share() == {(0, 2): 0.0}


def test_a_dense_model_or_a_missing_expert_is_a_clear_error(char_tokenizer):
    with pytest.raises(ConfigError, match="no mixture-of-experts router"):
        routers(tiny_model("llama", char_tokenizer))
    moe = tiny_model("qwen3_moe", char_tokenizer)
    with pytest.raises(IncompatibleArtifactError, match="no routed expert 9 at layer 0"):
        RouterBoost(moe, [(0, 9)], 2.0, "after")
    with pytest.raises(ConfigError, match="beta"):
        RouterBoost(moe, [(0, 1)], -1.0, "after")


class _Router(nn.Module):
    """Routes token id t (carried as the hidden state) to expert t % 4, top-1."""

    top_k = 1

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4, 1))

    def forward(self, h):
        idx = h.reshape(-1, 1).long() % 4
        return torch.zeros(idx.shape[0], 4), torch.ones_like(idx, dtype=torch.float), idx


class _IdModel(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.Module()
        layer.mlp = nn.Module()
        layer.mlp.gate = _Router()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList([layer])
        self.config = type("C", (), {"num_hidden_layers": 1})()

    def forward(self, input_ids, attention_mask=None):
        self.model.layers[0].mlp.gate(input_ids.float().reshape(-1, 1))


def test_npmi_counts_marker_positions_and_matches_the_formula_by_hand(char_tokenizer):
    texts = ["ab\ncheck 1", "check\nab", "abc"]
    npmi, counts = expert_npmi(_IdModel(), char_tokenizer, texts, "check", batch_size=2)
    rows = [char_tokenizer(t, return_offsets_mapping=True) for t in texts]
    n = sum(len(r["input_ids"]) for r in rows)  # padding never counted
    c_id = char_tokenizer("c", add_special_tokens=False)["input_ids"][0]
    assert counts == {**counts, "positions": n, "markers": 2}
    routed = [sum(i % 4 == e for r in rows for i in r["input_ids"]) for e in range(4)]
    for e in range(4):
        joint = 2 * (c_id % 4 == e)
        if joint == 0:
            assert npmi[0, e] == -1.0
        else:
            p_x, p_e, p_xe = 2 / n, routed[e] / n, joint / n
            assert npmi[0, e].item() == pytest.approx(math.log2(p_xe / (p_x * p_e)) / -math.log2(p_xe), rel=1e-5)
    before, _ = expert_npmi(_IdModel(), char_tokenizer, texts, "check", offset=-1)
    nl = char_tokenizer("\n", add_special_tokens=False)["input_ids"][0]
    bos_or_nl = {nl % 4, 1 % 4}  # the tokens before the two markers: a newline and the BOS
    assert {e for e in range(4) if before[0, e] > -1} == bos_or_nl
    with pytest.raises(InputError, match="never occurs"):
        expert_npmi(_IdModel(), char_tokenizer, ["abc"], "check")


def test_pick_experts_top_bottom_random_and_ties():
    npmi = torch.tensor([[0.5, -1.0, 0.1, float("nan")], [0.9, -1.0, -0.2, 0.3]])
    routed = torch.tensor([[10.0, 1.0, 5.0, 0.0], [3.0, 7.0, 2.0, 4.0]])
    assert pick_experts(npmi, "top") == ((1, 0), (0, 0))  # best first
    assert pick_experts(npmi, "bottom", routed=routed) == ((1, 1), (0, 1))  # tie at -1: the busier first
    assert pick_experts(npmi, "bottom", k=1, routed=routed) == ((1, 1),)
    r = pick_experts(npmi, "random", seed=3)
    assert r == pick_experts(npmi, "random", seed=3) and (0, 3) not in r  # a dense slot is never drawn
    with pytest.raises(ConfigError, match="cannot pick 9"):
        pick_experts(npmi, "top", k=9)


def test_the_artifact_round_trips_and_refuses_another_model(char_tokenizer, tmp_path):
    model = tiny_model("qwen3_moe", char_tokenizer)
    npmi = torch.tensor([[0.2, 0.1, -1.0, 0.0], [0.3, 0.5, 0.1, -0.4]])
    art = Rice(((1, 1), (1, 0)), 4.0, "after", fingerprint(model, char_tokenizer), npmi, {"marker": "check"})
    path = art.save(tmp_path / "rice")
    back = load_steering(path, model, char_tokenizer)
    assert isinstance(back, Rice) and back.experts == art.experts and back.beta == 4.0
    torch.testing.assert_close(back.npmi, npmi)
    base, _ = _routing(model)
    with back.steering(model, strength=1.0):  # strength is beta: 1 changes nothing
        same, _ = _routing(model)
    with back.steering(model):
        steered, _ = _routing(model)
    torch.testing.assert_close(same, base)
    assert not torch.allclose(steered, base)
    with pytest.raises(IncompatibleArtifactError, match="another model"):
        load_steering(path, tiny_model("mixtral", char_tokenizer), char_tokenizer)
