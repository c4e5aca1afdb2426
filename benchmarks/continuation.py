"""Step-by-step continuation: KV-cache reuse against recomputing the prefix, side by side.

16 sequences (hard built-in problems), 8 steps each, a step ends at ``\\n``.
"reuse" keeps each row's cache between steps (what search strategies run on);
"recompute" starts every step from the whole text so far, as a client of a
stateless API would. Prints forward tokens, generated tokens and wall time of
both (target: forward / generated <= 1.05 with reuse).

    python benchmarks/continuation.py [--device cpu] [--sequences 16] [--steps 8]
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import setup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sequences", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    setup()

    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.tasks.builtin.arithmetic import eval_problems

    gen = LocalGenerator.from_pretrained("builtin", device=args.device)
    prompts = [p.prompt for p in eval_problems("hard", args.sequences, seed=3)]
    params = SamplingParams(temperature=1.0, seed=0)

    def reuse() -> tuple[list[str], object]:
        before = gen.usage
        seqs = gen.start(prompts)
        for _ in range(args.steps):
            gen.step(seqs, params, stop=("\n",), max_tokens=48)
        texts = [gen.tokenizer.decode(seqs.generated(r), skip_special_tokens=True) for r in range(len(seqs))]
        return texts, gen.usage - before

    def recompute() -> tuple[list[str], object]:
        before = gen.usage
        texts = ["" for _ in prompts]
        done = [False] * len(prompts)
        for step in range(args.steps):
            live = [i for i in range(len(prompts)) if not done[i]]
            if not live:
                break
            outs = gen.generate(
                [prompts[i] + texts[i] for i in live],
                SamplingParams(temperature=1.0, seed=step, max_new_tokens=48, stop=("\n",)),
            )
            for i, c in zip(live, outs, strict=True):
                texts[i] += c.text + ("\n" if c.finish_reason == "stop" and c.token_ids else "")
                done[i] = c.finish_reason != "stop" or not c.token_ids or c.text.startswith("A:")
        return texts, gen.usage - before

    print(
        f"{args.sequences} sequences x {args.steps} steps on the built-in model "
        f"(device {next(gen.model.parameters()).device}, threads {torch.get_num_threads()})"
    )
    prompt_tokens = sum(len(gen.encode(p)) for p in prompts)
    print(
        f"prompts: {prompt_tokens} tokens; (fwd-prompt)/gen = forward tokens beyond one prompt pass per generated token"
    )
    print(f"{'mode':<10} {'generated':>9} {'forward':>8} {'(fwd-prompt)/gen':>17} {'padding':>8} {'wall s':>7}")
    results = {}
    for name, fn in (("reuse", reuse), ("recompute", recompute)):
        t0 = time.perf_counter()
        _, u = fn()
        wall = time.perf_counter() - t0
        results[name] = (u, wall)
        print(
            f"{name:<10} {u.generated_tokens:>9} {u.forward_tokens:>8} "
            f"{(u.forward_tokens - prompt_tokens) / u.generated_tokens:>17.3f} {u.padding_slots:>8} {wall:>7.2f}"
        )
    (ru, rw), (cu, cw) = results["reuse"], results["recompute"]
    print(f"recompute/reuse: forward tokens {cu.forward_tokens / ru.forward_tokens:.2f}x, wall {cw / rw:.2f}x")


if __name__ == "__main__":
    main()
