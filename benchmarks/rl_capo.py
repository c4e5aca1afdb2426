"""GRPO against CAPO at the same (aggressive) learning rate on the built-in task, side by side.

Both arms: same seed, same prompts, same steps, held-in greedy accuracy every 25 steps (100 problems), then
the held-out greedy accuracy on 200 ``builtin:medium`` problems with its binomial standard error, and CAPO's
masked-token share (mean over steps, and its largest step) with the reason split. Each arm is the run

    OMP_NUM_THREADS=1 steerable train rl --algo ALGO --lr LR --steps STEPS --eval-every 25 --eval-n 100 \\
        --seed 0 --out OUT/capo_ALGO_LR

run one after the other, then the greedy half of ``steerable builtin eval --model OUT/capo_ALGO_LR --split medium``
(:func:`held_out_greedy`); ``--reuse`` reads runs (and evaluations) already there instead of running them.

    OMP_NUM_THREADS=1 python benchmarks/rl_capo.py --lr 3e-4 --steps 100 --out runs
    OMP_NUM_THREADS=1 python benchmarks/rl_capo.py --lr 3e-4 --lr 1e-4 --steps 100 --out runs --reuse
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from _common import setup


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def _arm(out: Path, algo: str, lr: str, steps: int, seed: int, reuse: bool) -> tuple[list[dict], dict]:
    run = out / f"capo_{algo}_{lr}"
    done = reuse and (run / "model.safetensors").exists()
    if not done:
        from steerable.rl.run import RLRunConfig, train_rl

        cfg = RLRunConfig(
            out=str(run), algo=algo, lr=float(lr), steps=steps, minutes=None, eval_every=25, eval_n=100,
            seed=seed, device="cpu",
        )  # fmt: skip
        train_rl(cfg, progress=False)
    ev_path = out / f"capo_{algo}_{lr}.greedy.json"
    if not (reuse and ev_path.exists() and ev_path.stat().st_size):
        ev_path.write_text(json.dumps(held_out_greedy(run)))
    return _rows(run), json.loads(ev_path.read_text())


def held_out_greedy(run: Path, n: int = 200) -> dict:
    """The greedy half of ``steerable builtin eval --split medium`` (the same 200 problems, seed 0): its sampled
    pass and request prompts take as long again, and a collapsed model writes to the token cap."""
    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.tasks.builtin import arithmetic
    from steerable.tasks.builtin.evaluate import MAX_SOLUTION_TOKENS, generate_batched
    from steerable.tasks.builtin.verifier import is_correct

    gen = LocalGenerator.from_pretrained(str(run), device="cpu")
    problems = arithmetic.eval_problems("medium", n, seed=0)
    params = SamplingParams(temperature=0.0, max_new_tokens=MAX_SOLUTION_TOKENS)
    comps = generate_batched(gen, [p.prompt for p in problems], params)
    ok = [is_correct(p, c.text) for p, c in zip(problems, comps, strict=True)]
    return {"accuracy_greedy": sum(ok) / n, "n": n, "tokens": sum(len(c.token_ids) for c in comps) / n}


def _se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", action="append", required=True, help="learning rate (repeatable), as written in run names")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs"))
    ap.add_argument("--reuse", action="store_true", help="read finished runs and evaluations instead of rerunning")
    args = ap.parse_args()
    setup()
    print("| lr | algo | held-in greedy (100) at steps 0, 25, ... | held-out greedy (200) | masked tokens: mean (max) "
          "| trust region / objective down / objective up | s per step |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for lr in args.lr:
        for algo in ("grpo", "capo"):
            rows, ev = _arm(args.out, algo, lr, args.steps, args.seed, args.reuse)
            curve = list({r["step"]: r["held_in_accuracy"] for r in rows if "held_in_accuracy" in r}.values())
            acc = ev["accuracy_greedy"]  # of 200
            steps = [r for r in rows if "reward" in r]
            step_time = sum(r["step_time"] for r in steps) / len(steps)  # the optimiser step, evaluations apart
            masked = reasons = "-"
            if algo == "capo":
                share = [r["capo/masked_frac"] for r in steps]
                masked = f"{sum(share) / len(share):.2%} ({max(share):.2%})"
                keys = ("trust_region", "objective_decrease", "objective_increase")
                reasons = " / ".join(f"{sum(r[f'capo/masked_{k}_frac'] for r in steps) / len(steps):.2%}" for k in keys)
            print(
                f"| {lr} | `{algo}` | {' -> '.join(f'{a:.0%}' for a in curve)} | {acc:.1%} +- {_se(acc, 200):.1%} "
                f"| {masked} | {reasons} | {step_time:.1f} |"
            )


if __name__ == "__main__":
    main()
