"""T-PPO against GRPO on the built-in task, side by side: wall time to GRPO's held-in greedy accuracy.

Both arms train a fresh copy of the built-in model on ``builtin:medium`` with the same seed (the same 20,000
training problems, each arm drawing them in its own order), the same 32 rows per step (GRPO: 4 prompts x 8
rollouts; T-PPO: 32 slots of one prompt each), learning rate and wall budget, one after the other, with
held-in greedy evaluations at about the same wall cadence (``--eval-every`` GRPO steps, each one batch of whole
responses; ``--tppo-eval-every`` T-PPO steps, each one window of ``tppo_window`` tokens). Printed per arm:
steps, tokens generated, the held-in curve against training seconds (wall seconds less the evaluations), the
training seconds at which the arm first reached GRPO's final held-in accuracy, and held-out greedy accuracy on
200 problems (``steerable builtin eval --split medium``) with its binomial standard error.

    OMP_NUM_THREADS=1 python benchmarks/rl_tppo.py --minutes 10 --out runs/rl_tppo
    OMP_NUM_THREADS=1 python benchmarks/rl_tppo.py --read runs/rl_tppo      # the table again, from the runs
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

from _common import setup


def _run(out: Path, algo: str, args) -> None:
    from steerable.rl.run import RLRunConfig, parse_options, train_rl

    shutil.rmtree(out, ignore_errors=True)
    options = {"tppo_window": args.window, **parse_options(args.tppo_set)} if algo == "tppo" else {}
    every = args.tppo_eval_every if algo == "tppo" else args.eval_every
    cfg = RLRunConfig(
        out=str(out), algo=algo, task="builtin:medium", minutes=args.minutes, seed=args.seed, lr=args.lr,
        eval_every=every, eval_n=100, save_every=10**6, device="cpu", options=options,
    )  # fmt: skip
    t0 = time.perf_counter()
    train_rl(cfg, progress=False)
    (out / "bench.json").write_text(json.dumps({"wall": time.perf_counter() - t0}))


def _held_out(out: Path) -> float:
    """Greedy accuracy on the 200 held-out problems: ``steerable builtin eval --split medium``'s
    ``accuracy_greedy`` (the same problems, cap and verifier; its sampled and refusal passes skipped)."""
    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.tasks.builtin import arithmetic
    from steerable.tasks.builtin.evaluate import MAX_SOLUTION_TOKENS, generate_batched
    from steerable.tasks.builtin.verifier import is_correct

    path = out / "held_out.json"
    if not path.exists():
        gen = LocalGenerator.from_pretrained(str(out), device="cpu")
        problems = arithmetic.eval_problems("medium", 200, seed=0)
        greedy = SamplingParams(temperature=0.0, max_new_tokens=MAX_SOLUTION_TOKENS)
        comps = generate_batched(gen, [p.prompt for p in problems], greedy)
        ok = [is_correct(p, c.text) for p, c in zip(problems, comps, strict=True)]
        path.write_text(json.dumps({"accuracy_greedy": sum(ok) / len(ok)}))
    return json.loads(path.read_text())["accuracy_greedy"]


def _curve(out: Path, cpu: bool) -> tuple[list[tuple[float, float, int]], dict]:
    """(training seconds, held-in accuracy, step) per evaluation, and the summary. Training seconds: the row's
    seconds less the evaluations before it (the start's evaluation counted as one mean evaluation); ``cpu``: the
    process's CPU seconds (robust to other jobs on the machine) instead of wall seconds."""
    key, ev = ("cpu_seconds", "eval_cpu_seconds") if cpu else ("seconds", "eval_seconds")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in rows if "seconds" in r and r.get("step", 0) > 0]
    evals = sum("held_in_accuracy" in r for r in steps)
    first = steps[-1][ev] / evals if evals else 0.0  # stands in for the start's, inside every row's seconds
    curve = [(0.0, rows[0]["held_in_accuracy"], 0)]
    for r in steps:
        if "held_in_accuracy" in r:
            curve.append((r[key] - r[ev] - first, r["held_in_accuracy"], r["step"]))
    final = next(r for r in rows if r.get("final"))
    curve.append((steps[-1][key] - steps[-1][ev] - first, final["held_in_accuracy"], final["step"]))
    summary = json.loads((out / "summary.json").read_text())
    if "tokens" not in summary:  # GRPO: the rollouts' mean length times the batch, per step
        summary["tokens"] = round(sum(r.get("completions/mean_length", 0.0) * 32 for r in steps))
    return curve, summary


def _last(out: Path) -> dict:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return next(r for r in reversed(rows) if "seconds" in r and r.get("step", 0) > 0)


def _se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=10, help="GRPO's steps between held-in evaluations")
    # a window is a fraction of a GRPO step's time: about the same wall cadence
    ap.add_argument("--tppo-eval-every", type=int, default=40, help="T-PPO's windows between held-in evaluations")
    ap.add_argument("--tppo-set", action="append", default=[], help="a T-PPO knob, NAME=VALUE (repeatable)")
    ap.add_argument("--arms", default="grpo,tppo", help="which arms to run (the others are read back)")
    ap.add_argument("--out", default="runs/rl_tppo")
    ap.add_argument("--read", default=None, help="print the table of earlier runs in this directory")
    args = ap.parse_args()
    setup()
    root = Path(args.read or args.out)
    tag = "tppo" + "".join(f"_{x}" for x in args.tppo_set)  # the T-PPO run's directory: its knobs in the name
    if args.read is None:
        for algo in args.arms.split(","):
            _run(root / (tag if algo == "tppo" else algo), algo, args)
    arms = ["grpo"] + sorted(p.name for p in root.glob("tppo*") if (p / "summary.json").exists())
    cpu = all("cpu_seconds" in _last(root / a) for a in arms)
    curves = {a: _curve(root / a, cpu) for a in arms}
    clock = "CPU" if cpu else "wall"
    target = curves["grpo"][0][-1][1]  # GRPO's final held-in accuracy
    print(f"held-in target: GRPO's final held-in greedy accuracy {target:.0%} (100 problems); clock: {clock}\n")
    print(
        f"| arm | steps | tokens generated | train {clock} s | tokens / train {clock} s | train wall s "
        f"| time to target ({clock} s) | held-in end | held-out greedy (200) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for algo, (curve, summary) in curves.items():
        reach = next((t for t, acc, _ in curve if acc >= target), None)
        wall = _curve(root / algo, False)[0][-1][0]
        ho = _held_out(root / algo)
        print(
            f"| `{algo}` | {summary['steps']} | {summary['tokens']} | {curve[-1][0]:.0f} | "
            f"{summary['tokens'] / max(curve[-1][0], 1e-9):.0f} | {wall:.0f} | "
            f"{'not reached' if reach is None else f'{reach:.0f}'} | {curve[-1][1]:.0%} | "
            f"{ho:.1%} ± {_se(ho, 200):.1%} |"
        )
    print(f"\nheld-in curve (training {clock} seconds: accuracy)")
    for algo, (curve, _) in curves.items():
        print(f"- `{algo}`: " + ", ".join(f"{t:.0f}: {acc:.0%}" for t, acc, _ in curve))


if __name__ == "__main__":
    main()
