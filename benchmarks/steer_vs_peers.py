"""Our steering vectors and their application against steering-vectors' and repeng's, on one random-config Llama.

The peers pin ``transformers<5`` (we need 5), so they live in their own
environment, ``.venv-peers``, which this script creates on first use
(``torch==2.13.0``, ``steering-vectors==0.12.2``, ``repeng==0.4.0``); they are
never a dependency of steerable. The model (a random 4-layer Llama with the
built-in tokenizer) and the prompts go to a temporary directory, the peer half
of this script runs in that environment on the same files, and this half
compares.

1. **Extraction.** Mean difference at the last token over 32 harmful/benign
   pairs of the built-in world, every layer: ours (layer inputs) against
   steering-vectors' ``train_steering_vector`` (decoder-block outputs; the
   output of layer ``l`` is the input of ``l + 1``). Cosine per layer.
2. **Batched application.** The same vector added after layer 1 (our
   ``Add`` at the input of layer 2; repeng's ``set_raw_control`` on layer 1;
   steering-vectors' ``apply``; ``effect`` is how much it changes the
   last-token logits, so a match is not a vector doing nothing), then 8 prompts of different lengths in one
   left-padded batch against each prompt alone:
   - ``generate``: greedy ``model.generate``, 12 new tokens: rows identical;
   - ``forward``: one left-padded forward call with the attention mask (how a
     scorer or an evaluation harness calls a model): max |logit difference| at
     every prompt's last token, or the error raised;
   - ``forward+pos``: the same with position ids counted from each row's start.
   Ours also through our own generator. A steered row should equal the
   prompt decoded alone; the unsteered model is the reference for what
   "equal" means in floating point.

    python benchmarks/steer_vs_peers.py [--peers-venv .venv-peers]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

LAYER = 1  # steer the output of this layer (= the input of LAYER + 1)
STRENGTH = 8.0
PEERS = ("torch==2.13.0", "steering-vectors==0.12.2", "repeng==0.4.0")
TOL = 1e-4


def _pairs(n: int = 32) -> tuple[list[str], list[str]]:
    from steerable.tasks.builtin.contrast import contrast_set

    harmful, benign = contrast_set("refusal")
    n = min(n, len(harmful), len(benign))
    return harmful[:n], benign[:n]


def _test_prompts(tokenizer) -> list[str]:
    from steerable.tasks.builtin.contrast import contrast_set

    _, benign = contrast_set("refusal")
    prompts = sorted(set(benign), key=lambda p: len(tokenizer(p)["input_ids"]))
    step = max(1, len(prompts) // 8)
    return prompts[::step][:8]  # 8 prompts of spread lengths: the batch needs real padding


def _left_padded(tokenizer, prompts, device) -> dict[str, torch.Tensor]:
    """Written out here: the peers' environment does not have steerable."""
    rows = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(map(len, rows))
    pad = [width - len(r) for r in rows]
    return {
        "input_ids": torch.tensor(
            [[tokenizer.pad_token_id] * k + r for k, r in zip(pad, rows, strict=True)], device=device
        ),
        "attention_mask": torch.tensor([[0] * k + [1] * len(r) for k, r in zip(pad, rows, strict=True)], device=device),
        "position_ids": torch.tensor(
            [[0] * k + list(range(len(r))) for k, r in zip(pad, rows, strict=True)], device=device
        ),
    }


def _forward_checks(model, tokenizer, prompts, steering) -> dict[str, str | float]:
    """Max |difference| of last-token logits, batched against alone, with and without position ids."""
    out: dict[str, str | float] = {}
    dev = next(model.parameters()).device
    with torch.no_grad():
        plain = torch.stack([model(**tokenizer(p, return_tensors="pt")).logits[0, -1] for p in prompts])
    with torch.no_grad(), steering():
        alone = torch.stack([model(**tokenizer(p, return_tensors="pt")).logits[0, -1] for p in prompts])
        out["effect"] = float((alone - plain).abs().max())  # what the steering changes: the scale of "equal"
        enc = _left_padded(tokenizer, prompts, dev)
        for name, kw in (("forward", {k: enc[k] for k in ("input_ids", "attention_mask")}), ("forward+pos", enc)):
            try:
                batched = model(**kw).logits[:, -1]
                out[name] = float((batched - alone).abs().max())
            except Exception as e:  # what a user of that library sees
                out[name] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:90]}"
    return out


def _generate_check(model, tokenizer, prompts, steering, new: int = 12) -> float:
    """Share of rows whose greedy continuation in a left-padded batch equals the prompt's alone."""
    tokenizer.padding_side = "left"
    kw = dict(max_new_tokens=new, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
    with torch.no_grad(), steering():
        alone = [model.generate(**tokenizer(p, return_tensors="pt"), **kw)[0, -new:].tolist() for p in prompts]
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
        batched = model.generate(**enc, **kw)[:, -new:].tolist()
    return sum(a == b for a, b in zip(alone, batched, strict=True)) / len(prompts)


# ---- the peers' half, run in .venv-peers -----------------------------------------------------------


def peer(work: Path) -> None:
    from contextlib import contextmanager, nullcontext

    from repeng import ControlModel
    from steering_vectors import train_steering_vector
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    data = json.loads((work / "prompts.json").read_text())
    tok = PreTrainedTokenizerFast.from_pretrained(work / "model")  # ours is saved by transformers 5
    model = AutoModelForCausalLM.from_pretrained(work / "model").eval()
    sv = train_steering_vector(
        model, tok, list(zip(data["pos"], data["neg"], strict=True)), read_token_index=-1, show_progress=False
    )
    vectors = torch.stack([sv.layer_activations[i] for i in sorted(sv.layer_activations)])
    v = vectors[LAYER] * STRENGTH
    one = type(sv)(layer_activations={LAYER: v}, layer_type=sv.layer_type)
    res: dict = {"steering_vectors": {}, "repeng": {}, "plain": {}}
    prompts = data["test"]
    res["plain"] = {"generate": _generate_check(model, tok, prompts, nullcontext)}
    res["plain"].update(_forward_checks(model, tok, prompts, nullcontext))

    @contextmanager
    def sv_apply():
        with one.apply(model):
            yield

    res["steering_vectors"] = {"generate": _generate_check(model, tok, prompts, sv_apply)}
    res["steering_vectors"].update(_forward_checks(model, tok, prompts, sv_apply))
    cm = ControlModel(model, [LAYER])

    @contextmanager
    def repeng_control():
        cm.set_raw_control({LAYER: v})
        try:
            yield
        finally:
            cm.reset()

    res["repeng"] = {"generate": _generate_check(cm, tok, prompts, repeng_control)}
    res["repeng"].update(_forward_checks(cm, tok, prompts, repeng_control))
    from safetensors.torch import save_file

    save_file({"vectors": vectors.contiguous()}, str(work / "peer.safetensors"))
    (work / "peer.json").write_text(json.dumps(res))


# ---- our half --------------------------------------------------------------------------------------


def _ensure_peers(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if py.exists():
        return py
    print(f"creating {venv} with {', '.join(PEERS)} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", PEERS[0]], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *PEERS[1:], "safetensors"], check=True)
    return py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers-venv", default=".venv-peers")
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        return peer(Path(args.peer))
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import setup

    setup()
    from contextlib import nullcontext

    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, LlamaConfig

    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.steer import Add, steer
    from steerable.steer.extract import activations, mean_difference
    from steerable.tasks.builtin.tokenizer import build_tokenizer

    py = _ensure_peers(Path(args.peers_venv))
    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = AutoModelForCausalLM.from_config(cfg).eval()
    pos, neg = _pairs()
    prompts = _test_prompts(tok)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model.save_pretrained(work / "model")
        tok.save_pretrained(work / "model")
        (work / "prompts.json").write_text(json.dumps({"pos": pos, "neg": neg, "test": prompts}))
        subprocess.run([str(py), __file__, "--peer", str(work)], check=True)
        theirs = load_file(str(work / "peer.safetensors"))["vectors"]  # outputs of layers 0..L-1
        res = json.loads((work / "peer.json").read_text())

    ours = mean_difference(activations(model, tok, pos), activations(model, tok, neg))[0]  # inputs of layers 0..L-1
    print(f"random Llama (4 layers, hidden 64), {len(pos)} harmful/benign pairs, last token")
    print("1. mean difference, cosine ours vs steering-vectors (output of layer l = input of l+1):")
    for layer in range(len(theirs) - 1):
        cos = torch.nn.functional.cosine_similarity(ours[layer + 1], theirs[layer], dim=0)
        rel = (ours[layer + 1] - theirs[layer]).norm() / theirs[layer].norm()
        print(f"   layer {layer} output: cosine {float(cos):.6f}  relative difference {float(rel):.1e}")

    v = theirs[LAYER] * STRENGTH
    ours_ctx = lambda: steer(model, Add(v, layers=(LAYER + 1,)))  # noqa: E731
    res["steerable"] = {"generate": _generate_check(model, tok, prompts, ours_ctx)}
    res["steerable"].update(_forward_checks(model, tok, prompts, ours_ctx))
    gen = LocalGenerator(model, tok, chat_template="never")
    params = SamplingParams(temperature=0.0, max_new_tokens=12, ignore_eos=True)
    with ours_ctx():
        alone = [gen.generate([p], params)[0].token_ids for p in prompts]
        batched = [c.token_ids for c in gen.generate(prompts, params)]
    res["steerable"]["our generator"] = sum(a == b for a, b in zip(alone, batched, strict=True)) / len(prompts)
    plain_ours = {"generate": _generate_check(model, tok, prompts, nullcontext)}
    plain_ours.update(_forward_checks(model, tok, prompts, nullcontext))

    print(f"2. one vector x{STRENGTH:g} after layer {LAYER}, 8 prompts in a left-padded batch vs each alone")
    print("   (effect: max |logit change| steering makes alone; generate: share of rows identical;")
    print("    forward: max |logit diff| batched vs alone at each prompt's last token)")
    rows = [
        ("unsteered (transformers 5)", plain_ours),
        ("unsteered (transformers 4)", res["plain"]),
        ("steerable", res["steerable"]),
        ("steering-vectors", res["steering_vectors"]),
        ("repeng", res["repeng"]),
    ]
    cols = ("effect", "generate", "forward", "forward+pos", "our generator")
    print(f"   {'':<28}" + "".join(f"{c:>16}" for c in cols))
    for name, r in rows:
        cells = []
        for c in cols:
            x = r.get(c, "")
            cells.append(f"{x:>16.3g}" if isinstance(x, float) else f"{'-' if x == '' else 'error':>16}")
        print(f"   {name:<28}" + "".join(cells))
    for name, r in rows:
        for c in cols:
            if isinstance(r.get(c), str):
                print(f"   {name} {c}: {r[c]}")


if __name__ == "__main__":
    main()
