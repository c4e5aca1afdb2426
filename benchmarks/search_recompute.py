"""Step-wise search with KV-cache reuse against a naive version that re-runs every prefix.

PF, beam search and MCTS at 16 particles on 20 hard built-in items, guided by
the built-in PRM. "reuse" is steerable's process; "naive" rebuilds every row
from its tokens before each step, as a strategy over a stateless generate()
call would, and its PRM re-reads every partial from the start. Prints forward
tokens / generated tokens of the policy for both (target <= 1.05 with reuse,
prompt prefill excluded), the PRM's forward tokens per generated token (with
its prefix cache it reads the prompt once per item and each new token once)
and the wall-time ratio.

    python benchmarks/search_recompute.py [--items 20] [--particles 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import setup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--particles", type=int, default=16)
    ap.add_argument("--methods", default="pf,beam,mcts")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    setup()
    from steerable.lm.local import LocalGenerator, Sequences
    from steerable.lm.types import SamplingParams
    from steerable.search.lm_process import LMProcess
    from steerable.search.registry import make_scorer, make_strategy
    from steerable.tasks.answers import make_checker
    from steerable.tasks.loader import load_task

    gen = LocalGenerator.from_pretrained("builtin", device=args.device)
    scorer = make_scorer("builtin-prm")
    from steerable.reward.prm import TokenClassifierPRM

    naive_scorer = TokenClassifierPRM(scorer.model, scorer.tokenizer, cache_mb=0)
    checker = make_checker("builtin")
    items = load_task("builtin:hard", limit=args.items)

    class NaiveProcess(LMProcess):
        """Forgets every cache before a step: the whole sequence is run again."""

        def propose(self, state) -> None:
            old = state.seqs
            fresh = Sequences([list(t) for t in old.token_ids], list(old.prompt_lens), list(old.prompt_index))
            fresh.finished, fresh.rngs = list(old.finished), old.rngs
            state.seqs = fresh
            super().propose(state)

    params = SamplingParams(temperature=0.8)
    kw = dict(delimiter="\n", params=params, max_step_tokens=48, max_steps=40, max_tokens=320)
    print(
        f"{args.items} hard items, {args.particles} particles, built-in PRM, "
        f"threads {torch.get_num_threads()}, device {next(gen.model.parameters()).device}"
    )
    print(
        f"{'method':<6} {'mode':<7} {'generated':>9} {'forward':>8} {'(fwd-prompt)/gen':>17} "
        f"{'PRM fwd/gen':>12} {'acc':>5} {'wall s':>7}"
    )
    for method in args.methods.split(","):
        strategy = make_strategy(method, checker.extract)
        walls = {}
        for mode, cls, prm in (("reuse", LMProcess, scorer), ("naive", NaiveProcess, naive_scorer)):
            process = cls(gen, **kw)
            gen_tok = fwd = prompt_tok = correct = prm_tok = 0
            t0 = time.perf_counter()
            for i, item in enumerate(items):
                prm.cache.clear()  # nothing carried over between items
                res = strategy.run(process, prm, args.particles, item.prompt, seed=i)
                prm_tok += res.cost.scorer_tokens
                gen_tok += res.cost.generated_tokens
                fwd += res.cost.forward_tokens
                prompt_tok += len(gen.encode(item.prompt))
                correct += checker.correct(res.text, item.answer)
            walls[mode] = time.perf_counter() - t0
            print(
                f"{method:<6} {mode:<7} {gen_tok:>9} {fwd:>8} {(fwd - prompt_tok) / gen_tok:>17.3f} "
                f"{prm_tok / gen_tok:>12.3f} "
                f"{correct / len(items):>5.2f} {walls[mode]:>7.1f}"
            )
        print(f"{method:<6} naive/reuse wall time {walls['naive'] / walls['reuse']:.2f}x")


if __name__ == "__main__":
    main()
