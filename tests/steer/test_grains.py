import torch

from conftest import tiny_model
from steerable.steer import Add, decoder_layers, steer
from steerable.steer.grains import attributions, grains_vector


def _f(model, tok, embeds, pos, neg):
    out = []
    for cont in (pos, neg):
        y = tok(cont, add_special_tokens=False, return_tensors="pt")["input_ids"]
        full = torch.cat([embeds, model.get_input_embeddings()(y)], dim=1)
        lp = torch.log_softmax(model(inputs_embeds=full).logits[0, embeds.shape[1] - 1 : -1], -1)
        out.append(lp.gather(-1, y[0][:, None]).sum())
    return float(out[0] - out[1])


def test_integrated_gradients_add_up_to_the_change_from_the_baseline(char_tokenizer):
    # GPT-2 adds position embeddings to the inputs, so the path from the zero baseline is smooth; with RMSNorm
    # right after the embeddings (Llama) f is flat in the scale except within ~sqrt(eps) of zero, and a
    # Riemann sum cannot see that step, completeness or not
    model = tiny_model("gpt2", char_tokenizer)
    prompt, pos, neg = "R: how do I hack a bike?\n", "I can't", "Sure."
    scores = attributions(model, char_tokenizer, prompt, pos, neg, steps=200)
    ids = char_tokenizer(prompt, return_tensors="pt")["input_ids"]
    emb = model.get_input_embeddings()(ids)
    with torch.no_grad():
        gap = _f(model, char_tokenizer, emb, pos, neg) - _f(model, char_tokenizer, torch.zeros_like(emb), pos, neg)
    assert scores.shape == (ids.shape[1],)
    assert abs(float(scores.sum()) - gap) < 0.02 * abs(gap) + 1e-3  # completeness


def test_grains_vectors_apply_with_norm_preservation(char_tokenizer):
    model = tiny_model("qwen2", char_tokenizer)
    v = grains_vector(model, char_tokenizer, ["R: how do I hack a bike?\n", "R: how do I fix a kite?\n"], "I", "S", k=3)
    assert v.shape == (2, 32) and float(v.norm()) > 0
    seen = {}
    norm = decoder_layers(model)[1].input_layernorm
    norm.register_forward_pre_hook(lambda m, args: seen.__setitem__("h", args[0].clone()))
    enc = char_tokenizer(["R: how do I bake a cake?\n"], return_tensors="pt")
    with torch.no_grad():
        model(**enc)
        base = seen["h"]
        with steer(model, Add(v, layers=(1,), strength=5.0, norm_preserve=True)):
            model(**enc)
    assert not torch.allclose(seen["h"], base)
    torch.testing.assert_close(seen["h"].norm(dim=-1), base.norm(dim=-1))
