import random

import pytest
import torch
import torch.nn.functional as F

from steerable.errors import ConfigError
from steerable.tasks.builtin.arithmetic import Problem, apply
from steerable.tasks.builtin.train import TrainConfig, corrected_example, summed_loss


def test_a_corrected_solution_slips_once_its_check_recomputes_and_the_step_is_mended():
    p = Problem((37, 48, 19), ("+", "-"))
    segs = p.corrected_solution(1, 67)
    assert segs == [("37+48=85\ncheck 37+48=85\n", True), ("85-19=67\n", False),
                    ("check 85-19=66\n85-19=66\ncheck 85-19=66\nA: 66", True)]  # fmt: skip
    text = "".join(t for t, _ in segs)
    assert text.replace("85-19=67\n", "", 1).replace("check 85-19=66\n", "", 1) == p.solution("verbose")


def test_corrected_examples_train_the_mend_but_not_the_slip(char_tokenizer):
    tok = char_tokenizer
    make = corrected_example(1.0)
    rng = random.Random(0)
    for _ in range(50):
        ids, labels = make(rng, tok)
        text = tok.decode(ids[1:-1])
        trained = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100][:-1])
        lines = text.split("\n")
        slipped = [i for i, ln in enumerate(lines) if "=" in ln and not ln.startswith(("Q:", "check"))
                   and i + 1 < len(lines) and lines[i + 1].startswith("check") and lines[i + 1][6:] != ln]  # fmt: skip
        assert len(slipped) == 1  # one slip, its check disagrees
        slip = lines[slipped[0]]
        a, rest = slip.split("=")[0], slip.split("=")[1]
        assert slip + "\n" not in trained and lines[slipped[0] + 1] in trained  # the slip carries no loss
        op = next(c for c in "+-*" if c in a[1:])
        x, y = a.split(op, 1) if not a.startswith("-") else (a, "")
        assert int(rest) != apply(int(x), op, int(y))
        assert labels[-1] == tok.eos_token_id and labels[0] == -100
    assert corrected_example(0.0).__name__ == "arithmetic_example"


def test_a_mixture_of_experts_adds_its_routers_balance_loss(char_tokenizer):
    from transformers import Qwen3MoeForCausalLM

    from steerable.lm.builtin import moe_config

    tok = char_tokenizer
    torch.manual_seed(0)
    cfg = moe_config(len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    cfg.num_hidden_layers, cfg.router_aux_loss_coef = 1, 0.5
    model = Qwen3MoeForCausalLM(cfg)
    ids = torch.tensor([tok("Q: 1+2=\n1+2=3")["input_ids"]])
    batch = (ids, torch.ones_like(ids), ids.clone())
    out = model(input_ids=ids, output_router_logits=True)
    ce = F.cross_entropy(out.logits[0, :-1], ids[0, 1:], reduction="sum") / 10
    assert out.aux_loss > 0
    assert torch.allclose(summed_loss(model, batch, 10), ce + 0.5 * out.aux_loss, atol=1e-5)


def test_the_trainer_checks_its_architecture_and_corrections():
    assert TrainConfig(out="x", arch="moe", corrections=0.05).arch == "moe"
    with pytest.raises(ConfigError):
        TrainConfig(out="x", arch="mamba")
    with pytest.raises(ConfigError):
        TrainConfig(out="x", corrections=1.5)


def test_the_shipped_mixture_of_experts_loads_by_name_and_routes_two_of_eight():
    from steerable.lm.loading import load_model

    model, tok = load_model("builtin:moe", device="cpu")
    assert model.config.model_type == "qwen3_moe" and model.config.num_experts == 8
    assert model.config.num_experts_per_tok == 2 and len(tok) == model.config.vocab_size
    gate = model.model.layers[0].mlp.gate
    seen = []
    handle = gate.register_forward_hook(lambda m, i, o: seen.append(o[2]))
    try:
        model(input_ids=torch.tensor([tok("Q: 1+2=\n")["input_ids"]]))
    finally:
        handle.remove()
    assert seen and seen[0].shape[-1] == 2  # the router's top-2 expert indices per token (RICE hooks here)
