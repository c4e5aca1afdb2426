"""The built-in PRM's calculator: a small causal LM trained only on the world's single arithmetic lines.

It is trained on lines alone (``<s>37+48=85\\n`` or ``<s>check 37+48=85\\n``),
with the loss on what follows the ``=``. (Writing the result backwards,
lowest digit first, as carries run, learnt far slower here: 19% of lines
after 700 steps against 90% in the written order, where a result mostly
copies its first operand's leading digits.) The surprise PRM
(:mod:`steerable.reward.surprise_prm`) scores each finished solution line
with it, so the PRM knows arithmetic its policy gets wrong.

Training lines are the steps of the world's training problems (never a
held-out problem's), a third of them in the verbose ``check`` form; the
accuracy reported is greedy exact-line accuracy on the steps of held-out
problems.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

import torch

from steerable.reward.surprise_prm import CALC_MAX_LINE, line_batch
from steerable.tasks.builtin import arithmetic

LAYERS, HEADS = 3, 4


def lines(rng: random.Random, n: int, held_out: bool = False) -> list[str]:
    """``n`` arithmetic lines (without newline) from random problems' steps, a third in the ``check`` form."""
    out: list[str] = []
    while len(out) < n:
        if held_out:
            p = arithmetic.sample_problem(rng, rng.randint(*arithmetic.ALL_OPS))
            if not p.held_out:
                continue
        else:
            p = arithmetic.train_problem(rng)
        for step in p.steps:
            out.append(("check " if rng.random() < 1 / 3 else "") + step.text)
    return out[:n]


def encode(tok, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``<s> line \\n`` ids and a mask of the target tokens (after the ``=``), as the PRM reads them."""
    eq, nl = tok.convert_tokens_to_ids("="), tok.convert_tokens_to_ids("\n")
    lines = [tok.encode(text, add_special_tokens=False) for text in texts]
    ids, _, target = line_batch(lines, eq, nl, tok.bos_token_id, tok.pad_token_id)
    return ids, target


def build(tok, width: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    conf = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=CALC_MAX_LINE + 8,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(conf)


@torch.inference_mode()
def accuracy(model, tok, texts: list[str], batch: int = 512) -> float:
    """Greedy exact-line accuracy: every target token is the calculator's argmax given the ones before it."""
    model.eval()
    dev = next(model.parameters()).device
    ok = 0
    for i in range(0, len(texts), batch):
        ids, target = encode(tok, texts[i : i + batch])
        ids, target = ids.to(dev), target.to(dev)
        pred = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long()).logits[:, :-1].argmax(-1)
        ok += int(((pred == ids[:, 1:]) | ~target[:, 1:]).all(-1).sum())
    return ok / len(texts)


def train_calculator(
    tok,
    steps: int,
    batch: int,
    width: int,
    lr: float,
    seed: int,
    device,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[torch.nn.Module, dict]:
    """AdamW on fresh lines every step (200 warm-up steps, cosine to 0); returns the model and its record."""
    torch.manual_seed(seed)
    rng = random.Random(f"calc-{seed}")
    model = build(tok, width).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    t0, loss_ema = time.time(), None
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 200) * 0.5 * (1 + math.cos(math.pi * step / steps))
        ids, target = encode(tok, lines(rng, batch))
        ids, target = ids.to(device), target.to(device)
        labels = ids.masked_fill(~target, -100)
        loss = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        if on_step:
            on_step(step + 1, loss_ema)
    seconds = time.time() - t0
    held = lines(random.Random(f"calc-eval-{seed}"), 5000, held_out=True)
    record = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "batch": batch,
        "final_loss": round(loss_ema or 0.0, 4),
        "held_out_line_accuracy": round(accuracy(model, tok, held), 4),
        "seconds": round(seconds, 1),
    }
    return model.eval(), record
