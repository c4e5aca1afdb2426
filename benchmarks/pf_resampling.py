"""Did particle filtering's resampling do anything? The effective sample size of its weights at every step.

PF resamples at every step (multinomial on softmax(logit(r)); the paper's
default), so the count of resampling steps only says the mechanism ran. What
it changed depends on the weights: with ESS close to N every particle is
about as likely as every other and resampling mostly reshuffles; a low ESS
means it dropped some particles and copied others.

    python benchmarks/pf_resampling.py [--items 40] [--particles 4] [--prm builtin]
"""

from __future__ import annotations

import argparse

from _common import setup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=40, help="first builtin:hard items")
    ap.add_argument("--particles", type=int, default=4)
    ap.add_argument("--prm", default="builtin", help="builtin or a PRM directory")
    args = ap.parse_args()
    setup()
    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.reward.prm import TokenClassifierPRM
    from steerable.search.lm_process import LMProcess
    from steerable.search.registry import make_strategy
    from steerable.tasks.answers import make_checker
    from steerable.tasks.loader import load_task

    gen = LocalGenerator.from_pretrained("builtin", device="cpu")
    prm = TokenClassifierPRM.from_pretrained(args.prm)
    pf = make_strategy("pf", make_checker("builtin").extract)
    n = args.particles
    ess, mins = [], []
    for i, item in enumerate(load_task("builtin:hard", limit=args.items)):
        process = LMProcess(
            gen, delimiter="\n", params=SamplingParams(temperature=0.8), max_step_tokens=64, max_tokens=320
        )
        steps = pf.run(process, prm, n, item.prompt, seed=i).info["ess"]
        ess += steps
        mins.append(min(steps, default=float(n)))
    uneven = sum(e < 0.75 * n for e in ess)
    low = sum(m < n / 2 for m in mins)
    print(f"{args.items} items, pf@{n}, PRM {args.prm}: {len(ess)} resampling steps")
    print(f"steps with ESS < {0.75 * n:g} of {n}: {uneven} ({uneven / len(ess):.0%})")
    print(f"mean of each item's lowest ESS: {sum(mins) / len(mins):.2f}; items with a step at ESS < {n / 2:g}: {low}")


if __name__ == "__main__":
    main()
