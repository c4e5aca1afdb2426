"""The training mixture of the built-in world: arithmetic in two styles, and requests."""

from __future__ import annotations

import random

from steerable.tasks.builtin import arithmetic, requests

#: Share of arithmetic examples in the mixture (the rest are requests).
ARITHMETIC_SHARE = 0.8
#: Share of arithmetic solutions written in the verbose style. A little over
#: one half, so greedy decoding tends to the verbose style and efficiency
#: steering has something to shorten.
VERBOSE_SHARE = 0.55
#: Relative frequency of 1..8 operations in training. Long chains are seen less
#: (21% of problems have 5-8 operations): trained uniformly, the model reached
#: 93% on easy but 76% on hard, leaving search little room on the hard split.
OPS_WEIGHTS = (4, 4, 3, 3, 1.5, 1, 0.75, 0.5)


def training_pair(rng: random.Random) -> tuple[str, str]:
    """One (prompt, completion) pair; the completion is followed by EOS in training."""
    if rng.random() < ARITHMETIC_SHARE:
        n_ops = rng.choices(range(1, 9), weights=OPS_WEIGHTS)[0]
        p = arithmetic.train_problem(rng, n_ops, n_ops)
        style = "verbose" if rng.random() < VERBOSE_SHARE else "concise"
        return p.prompt, p.solution(style)
    return requests.training_example(rng)
