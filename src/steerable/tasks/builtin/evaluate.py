"""``steerable builtin eval``: what the built-in model does, measured."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from steerable.config import opt
from steerable.lm.types import Completion, SamplingParams
from steerable.tasks.builtin import arithmetic, requests
from steerable.tasks.builtin.verifier import is_correct

MAX_SOLUTION_TOKENS = 320


@dataclass(frozen=True)
class EvalSet:
    """Which built-in problems and requests an evaluation uses."""

    split: Literal["easy", "medium", "hard", "all"] = opt("hard", "Arithmetic split.")
    n: int = opt(200, "Arithmetic problems.", ge=1, le=100_000)
    requests: int = opt(0, "Request prompts, evenly spaced over all of them (0: all).", ge=0)


def generate_batched(
    gen,
    prompts: Sequence[str],
    params: SamplingParams,
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> list[Completion]:
    """``gen.generate`` over chunks of prompts (bounded memory); prompt indices stay global."""
    out: list[Completion] = []
    for i in range(0, len(prompts), batch_size):
        chunk = gen.generate(list(prompts[i : i + batch_size]), params)
        out.extend(dataclasses.replace(c, prompt_index=c.prompt_index + i) for c in chunk)
        if on_batch:
            on_batch(len(prompts[i : i + batch_size]))
    return out


def evaluate(gen, split: str = "hard", n: int = 200, n_requests: int = 0, seed: int = 0, progress: bool = True) -> dict:
    """Accuracy (greedy and sampled), by number of operations, style mix, length, refusal rates."""
    from rich.progress import Progress

    problems = arithmetic.eval_problems(split, n, seed=seed)
    reqs = requests.all_requests()
    if n_requests:
        reqs = reqs[:: max(1, len(reqs) // n_requests)]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=MAX_SOLUTION_TOKENS)
    sampled = SamplingParams(temperature=1.0, max_new_tokens=MAX_SOLUTION_TOKENS, seed=seed)
    total = 2 * (len(problems) + len(reqs))
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"eval {split}", total=total)
        tick = lambda k: bar.advance(task, k)  # noqa: E731
        runs = {
            name: generate_batched(gen, [p.prompt for p in problems], params, on_batch=tick)
            for name, params in (("greedy", greedy), ("sampled", sampled))
        }
        rruns = {
            name: generate_batched(gen, [r.prompt for r in reqs], params, on_batch=tick)
            for name, params in (("greedy", greedy), ("sampled", sampled))
        }

    result: dict = {"split": split, "problems": len(problems), "seed": seed}
    for name, comps in runs.items():
        ok = [is_correct(p, c.text) for p, c in zip(problems, comps, strict=True)]
        by_ops: dict[int, list[bool]] = defaultdict(list)
        for p, good in zip(problems, ok, strict=True):
            by_ops[p.n_ops].append(good)
        result[f"accuracy_{name}"] = round(sum(ok) / len(ok), 4)
        result[f"accuracy_{name}_by_ops"] = {k: round(sum(v) / len(v), 4) for k, v in sorted(by_ops.items())}
        result[f"verbose_share_{name}"] = round(sum("check" in c.text for c in comps) / len(comps), 4)
        result[f"mean_solution_tokens_{name}"] = round(sum(len(c.token_ids) for c in comps) / len(comps), 2)
    for name, comps in rruns.items():
        rates: dict[str, list[bool]] = defaultdict(list)
        for r, c in zip(reqs, comps, strict=True):
            refused = requests.is_refusal(c.text)
            rates[("held_out_" if r.held_out else "") + r.kind].append(refused)
        result[f"refusal_{name}"] = {k: round(sum(v) / len(v), 4) for k, v in sorted(rates.items())}
    return result


def steering_eval(
    gen, split: str = "medium", n: int = 100, seed: int = 0, progress: bool = True, n_requests: int = 0
) -> dict:
    """What steering changes, greedy: refusal rates by kind, arithmetic accuracy, solution length and style."""
    from rich.progress import Progress

    problems = arithmetic.eval_problems(split, n, seed=seed)
    reqs = requests.all_requests()
    if n_requests:
        reqs = reqs[:: max(1, len(reqs) // n_requests)]
    params = SamplingParams(temperature=0.0, max_new_tokens=MAX_SOLUTION_TOKENS)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("steer eval", total=len(problems) + len(reqs))
        tick = lambda k: bar.advance(task, k)  # noqa: E731
        sols = generate_batched(gen, [p.prompt for p in problems], params, on_batch=tick)
        replies = generate_batched(gen, [r.prompt for r in reqs], params, on_batch=tick)
    rates: dict[str, list[bool]] = defaultdict(list)
    for r, c in zip(reqs, replies, strict=True):
        rates[("held_out_" if r.held_out else "") + r.kind].append(requests.is_refusal(c.text))
    return {
        "refusal": {k: round(sum(v) / len(v), 4) for k, v in sorted(rates.items())},
        "accuracy": round(sum(is_correct(p, c.text) for p, c in zip(problems, sols, strict=True)) / len(problems), 4),
        "mean_solution_tokens": round(sum(len(c.token_ids) for c in sols) / len(sols), 2),
        "verbose_share": round(sum("check" in c.text for c in sols) / len(sols), 4),
        "split": split,
        "problems": len(problems),
    }
