"""Generated tokens per second of PF and beam search against raw batched generation of as many tokens.

For each method: run it on hard built-in items at ``--particles``, count the
tokens it generated and the time it spent (with and without the PRM's time),
then have ``model.generate`` produce the same number of tokens as one batch of
``--particles`` rows. Prints tokens/s of both and the ratio (target >= 0.8x), and
what the PRM cost: tokens its model ran per generated token and its seconds per
item (``--scorer`` picks the PRM: ``builtin-prm`` or a PRM directory; repeat it to
compare PRMs side by side in one run, each method on the same items and seeds).

    python benchmarks/search_throughput.py [--items 10] [--particles 16] [--device cpu] [--scorer DIR ...]
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from _common import setup


def timed(prm):
    """``prm`` with its scoring seconds and the tokens its model ran counted."""

    class Timed:
        range = prm.range

        def __init__(self):
            self.seconds, self.calls, self.tokens = 0.0, 0, 0

        @property
        def forward_tokens(self) -> int:
            return prm.forward_tokens

        def score(self, prompts, partials):
            t0 = time.perf_counter()
            before = prm.forward_tokens
            out = prm.score(prompts, partials)
            self.seconds += time.perf_counter() - t0
            self.tokens += prm.forward_tokens - before
            self.calls += 1
            return out

    return Timed()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10)
    ap.add_argument("--particles", type=int, default=16)
    ap.add_argument("--methods", default="pf,beam")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--scorer", action="append", help="builtin-prm (default) or a PRM directory; repeat to compare")
    args = ap.parse_args()
    setup()
    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.search.lm_process import LMProcess
    from steerable.search.registry import make_scorer, make_strategy
    from steerable.tasks.answers import make_checker
    from steerable.tasks.loader import load_task

    gen = LocalGenerator.from_pretrained("builtin", device=args.device)
    items = load_task("builtin:hard", limit=args.items)
    process = LMProcess(
        gen, delimiter="\n", params=SamplingParams(temperature=0.8), max_step_tokens=48, max_steps=40, max_tokens=320
    )
    model, tok = gen.model, gen.tokenizer
    dev = next(model.parameters()).device
    names = args.scorer or ["builtin-prm"]
    prms = {name: make_scorer(name) for name in names}
    print(f"{args.items} hard items, {args.particles} particles, threads {torch.get_num_threads()}, device {dev}")
    for name, prm in prms.items():
        print(f"PRM {name}: {sum(p.numel() for p in prm.model.parameters()):,} parameters")
    print(
        f"{'PRM':<24} {'method':<6} {'tokens':>7} {'tok/s':>7} {'tok/s no PRM':>13} {'raw tok/s':>10} "
        f"{'ratio':>6} {'ratio no PRM':>13} {'PRM tok/gen tok':>16} {'PRM s/item':>11} {'PRM share':>10}"
    )
    for (name, prm), method in itertools.product(prms.items(), args.methods.split(",")):
        strategy = make_strategy(method, make_checker("builtin").extract)
        scorer = timed(prm)
        prm.clear_cache()  # each method pays for its own scoring
        n_tok, t0 = 0, time.perf_counter()
        for i, item in enumerate(items):
            n_tok += strategy.run(process, scorer, args.particles, item.prompt, seed=i).cost.generated_tokens
        wall = time.perf_counter() - t0
        per_row = max(1, n_tok // (args.particles * len(items)))
        enc = tok([items[0].prompt] * args.particles, return_tensors="pt", padding=True).to(dev)
        t1 = time.perf_counter()
        raw_tokens = 0
        with torch.inference_mode():
            for _ in items:
                out = model.generate(
                    **enc,
                    do_sample=True,
                    temperature=0.8,
                    top_k=0,
                    max_new_tokens=per_row,
                    min_new_tokens=per_row,
                    pad_token_id=tok.pad_token_id,
                )
                raw_tokens += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
        raw = raw_tokens / (time.perf_counter() - t1)
        ours, ours_np = n_tok / wall, n_tok / (wall - scorer.seconds)
        print(
            f"{name[-24:]:<24} {method:<6} {n_tok:>7} {ours:>7.0f} {ours_np:>13.0f} {raw:>10.0f} {ours / raw:>6.2f} "
            f"{ours_np / raw:>13.2f} {scorer.tokens / n_tok:>16.2f} {scorer.seconds / len(items):>11.2f} "
            f"{scorer.seconds / wall:>10.0%}"
        )


if __name__ == "__main__":
    main()
