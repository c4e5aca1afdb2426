"""RICE on the built-in MoE model: the corpus its experts are found on, and what boosting them does.

The marker is the ``check`` line: ``builtin:moe`` learnt to write ``check A op B = C`` after a step, and, in
a few percent of its training solutions, to write a step again after a check that recomputed another result,
so checking can catch a slip. :func:`rice_eval` measures, side by side and on the same seeds, per expert
choice (top nPMI, two random experts, the two lowest), variant and β:

- ``check_rate``: the share of lines of free (sampled, T 1) solutions to held-out ``builtin:medium`` problems
  that are ``check`` lines;
- ``hard_accuracy``: greedy accuracy on held-out ``builtin:hard`` problems;
- ``chosen``: per boosted pair, the share of tokens (of all three runs) its layer routed to it: whether the
  boost fired (``after`` leaves it as it was; ``before`` raises it);
- ``benign_unchanged``: the share of benign requests (plain and wrapped, evenly spaced) whose greedy reply
  is the unsteered model's, character for character (instruction following kept).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch

from steerable.lm.padding import right_padded
from steerable.lm.types import SamplingParams
from steerable.steer.rice import Rice, RouterBoost, pick_experts
from steerable.tasks.builtin import arithmetic, requests
from steerable.tasks.builtin.evaluate import MAX_SOLUTION_TOKENS, generate_batched
from steerable.tasks.builtin.verifier import is_correct

MARKER = "check"


def corpus(gen, n: int = 256, seed: int = 0) -> list[str]:
    """The model's own solutions (sampled at T 1) to ``n`` training problems of 2-8 operations, prompt
    included: the texts nPMI is counted over (the paper counts over the model's reasoning traces)."""
    rng = random.Random(f"rice-corpus-{seed}")
    problems = [arithmetic.train_problem(rng, 2, 8) for _ in range(n)]
    params = SamplingParams(temperature=1.0, max_new_tokens=MAX_SOLUTION_TOKENS, seed=seed)
    comps = generate_batched(gen, [p.prompt for p in problems], params)
    return [p.prompt + c.text for p, c in zip(problems, comps, strict=True)]


def check_rate(texts: Sequence[str]) -> float:
    lines = [ln for t in texts for ln in t.splitlines() if ln.strip()]
    return sum(ln.startswith(MARKER) for ln in lines) / max(1, len(lines))


@torch.no_grad()
def check_probability(gen, problems: Sequence[arithmetic.Problem]) -> float:
    """The model's mean probability of opening a ``check`` line at the end of each step line of the concise
    reference solutions (teacher-forced): the decision RICE should move, read without sampling noise."""
    c_id = gen.tokenizer(MARKER[0], add_special_tokens=False)["input_ids"][0]
    nl, answer = (gen.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("\n", "A"))
    rows = [gen.tokenizer(p.prompt + p.solution("concise"))["input_ids"] for p in problems]
    starts = [len(gen.tokenizer(p.prompt)["input_ids"]) for p in problems]
    ids, mask = right_padded(rows, next(gen.model.parameters()).device)
    probs = torch.softmax(gen.model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    # the newline ending a step line: after the prompt, and followed by another step (not by the answer line)
    at = [(i, j) for i, r in enumerate(rows) for j in range(starts[i], len(r) - 1) if r[j] == nl and r[j + 1] != answer]
    return float(sum(probs[i, j, c_id] for i, j in at) / max(1, len(at)))


def _se(p: float, n: int) -> float:
    return round(math.sqrt(max(p * (1 - p), 0.0) / max(1, n)), 4)


def measure(gen, n_free: int = 100, n_hard: int = 100, n_benign: int = 64, seed: int = 0) -> Callable[[], dict]:
    """A function that measures the three figures under whatever steering is active when it is called."""
    free = arithmetic.eval_problems("medium", n_free, seed=seed)
    hard = arithmetic.eval_problems("hard", n_hard, seed=seed)
    benign = [r for r in requests.all_requests() if not r.harmful]
    benign = benign[:: max(1, len(benign) // n_benign)][:n_benign]  # evenly spaced: plain and wrapped
    sampled = SamplingParams(temperature=1.0, max_new_tokens=MAX_SOLUTION_TOKENS, seed=seed)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=MAX_SOLUTION_TOKENS)

    def run() -> dict:
        p_check = check_probability(gen, free)
        texts = [c.text for c in generate_batched(gen, [p.prompt for p in free], sampled)]
        sols = generate_batched(gen, [p.prompt for p in hard], greedy)
        acc = sum(is_correct(p, c.text) for p, c in zip(hard, sols, strict=True)) / len(hard)
        replies = [c.text for c in generate_batched(gen, [r.prompt for r in benign], greedy)]
        lines = sum(len([ln for ln in t.splitlines() if ln.strip()]) for t in texts)
        rate = check_rate(texts)
        return {
            "check_prob": round(p_check, 4),
            "check_rate": round(rate, 4),
            "check_rate_se": _se(rate, lines),
            "hard_accuracy": round(acc, 4),
            "hard_accuracy_se": _se(acc, len(hard)),
            "replies": replies,
        }

    return run


def rice_eval(
    gen,
    rice: Rice,
    betas: Sequence[float] = (1.0, 2.0, 4.0, 8.0),
    picks: Sequence[str] = ("top", "random", "bottom"),
    variants: Sequence[str] = ("after", "before"),
    n_free: int = 100,
    n_hard: int = 100,
    n_benign: int = 64,
    seed: int = 0,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """One row per (expert choice, variant, β); β 1 is the unsteered model, measured once and repeated."""
    if rice.npmi is None:
        raise ValueError("this RICE artifact holds no nPMI table to draw the control experts from")
    routed = None
    if "routed" in rice.info.get("counts", {}):
        routed = torch.tensor(rice.info["counts"]["routed"])
    run = measure(gen, n_free, n_hard, n_benign, seed)
    picked = {pick: pick_experts(rice.npmi, pick, len(rice.experts), seed=seed, routed=routed) for pick in picks}
    every = sorted({p for experts in picked.values() for p in experts})
    with RouterBoost(gen.model, every, 1.0, "after") as counter:  # beta 1: the model itself, its routing counted
        base = run()
    unsteered = counter.chosen_share()
    rows = []
    for pick, experts in picked.items():
        for variant in variants:
            for beta in betas:
                if beta == 1.0:
                    got, chosen = base, unsteered
                else:
                    with RouterBoost(gen.model, experts, beta, variant) as boost:
                        got = run()
                    chosen = boost.chosen_share()
                same = sum(a == b for a, b in zip(got["replies"], base["replies"], strict=True)) / len(base["replies"])
                row = {
                    "experts": pick,
                    "pairs": [list(p) for p in experts],
                    "npmi": [round(float(rice.npmi[p]), 3) for p in experts],
                    "variant": variant,
                    "beta": beta,
                    "chosen": [round(chosen[p], 4) for p in experts],
                    **{k: v for k, v in got.items() if k != "replies"},
                    "benign_unchanged": round(same, 4),
                    "benign": len(base["replies"]),
                }
                rows.append(row)
                if on_row:
                    on_row(row)
    return rows
