"""Generation with steering hooks against plain generation, same prompts, interleaved in one run.

Batch 16 (medium built-in problems), greedy, a fixed number of new tokens
(``ignore_eos``) so every variant does the same work. Variants: plain; a
vector added at one layer (CAA-style); a direction ablated at every layer
input and attention/MLP output (Arditi et al.); the weighted controller
(Guiding Giants: one unsteered read of the prompt, then a patch at every
layer for every new token; trained here for one epoch, its weights do not
change its cost). Each is timed ``--repeats`` times in rotation and the
medians compared (minima too:
the least disturbed run on a shared machine). Prints time ratios to plain (targets: vector <= 1.03,
controller <= 1.10).

    python benchmarks/steer_overhead.py [--device cpu] [--batch 16] [--tokens 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import setup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    setup()
    from contextlib import nullcontext

    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.steer import Ablate, Add, steer
    from steerable.steer.controller import ControllerConfig, train_controller
    from steerable.tasks.builtin.arithmetic import eval_problems
    from steerable.tasks.builtin.contrast import contrast_set

    gen = LocalGenerator.from_pretrained("builtin", device=args.device)
    prompts = [p.prompt for p in eval_problems("medium", args.batch)]
    params = SamplingParams(temperature=0.0, max_new_tokens=args.tokens, ignore_eos=True)
    d = gen.model.config.hidden_size
    v = torch.randn(d, generator=torch.Generator().manual_seed(0)) * 0.01
    harmful, benign = contrast_set("jailbreak")
    ctl = train_controller(gen.model, gen.tokenizer, harmful, benign, v, ControllerConfig(epochs=1))
    variants = {
        "plain": nullcontext,
        "vector (1 layer)": lambda: steer(gen.model, Add(v, layers=(2,))),
        "ablation (all layers)": lambda: steer(gen.model, Ablate(v)),
        "controller": lambda: ctl.steering(gen.model),
    }
    gen.generate(prompts, params)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, make in variants.items():
            with make():
                t0 = time.perf_counter()
                gen.generate(prompts, params)
                times[name].append(time.perf_counter() - t0)
    dev = next(gen.model.parameters()).device
    print(f"batch {args.batch}, {args.tokens} new tokens, threads {torch.get_num_threads()}, device {dev}")
    # the median is the figure; the minimum is what a run untouched by other work on a shared machine takes
    base, base_min = statistics.median(times["plain"]), min(times["plain"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<22} {med:7.3f} s  ratio {med / base:.3f}  (min ratio {min(ts) / base_min:.3f})")


if __name__ == "__main__":
    main()
