"""Our generator against raw ``model.generate`` on the built-in model, side by side.

Same prompts, same sampling settings (temperature 1, top-p 1), same number of
new tokens (EOS ignored by both so every row generates exactly
``--new-tokens``), batch 1, 16 and 64. Prints tokens/s of both and the ratio
(target: ours >= 0.9x raw).

    python benchmarks/generate_throughput.py [--device cpu] [--new-tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import setup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    setup()

    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.tasks.builtin.arithmetic import eval_problems

    gen = LocalGenerator.from_pretrained("builtin", device=args.device)
    model, tok = gen.model, gen.tokenizer
    dev = next(model.parameters()).device
    print(
        f"device {dev}, torch threads {torch.get_num_threads()}, {args.new_tokens} new tokens per row, "
        f"best of {args.repeats}"
    )
    print(f"{'batch':>5} {'raw tok/s':>10} {'ours tok/s':>11} {'ours/raw':>9}")
    for b in map(int, args.batches.split(",")):
        prompts = [p.prompt for p in eval_problems("all", b, seed=11)]
        params = SamplingParams(temperature=1.0, max_new_tokens=args.new_tokens, seed=0, ignore_eos=True)

        def ours(prompts=prompts, params=params) -> int:
            return sum(len(c.token_ids) for c in gen.generate(prompts, params))

        def raw(prompts=prompts) -> int:
            enc = tok(prompts, return_tensors="pt", padding=True).to(dev)
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    do_sample=True,
                    temperature=1.0,
                    top_p=1.0,
                    top_k=0,
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    pad_token_id=tok.pad_token_id,
                )
            return (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]

        rates = {}
        for name, fn in (("raw", raw), ("ours", ours)):
            fn()  # warm-up
            best = 0.0
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                n = fn()
                best = max(best, n / (time.perf_counter() - t0))
            rates[name] = best
        print(f"{b:>5} {rates['raw']:>10.0f} {rates['ours']:>11.0f} {rates['ours'] / rates['raw']:>8.2f}x")


if __name__ == "__main__":
    main()
