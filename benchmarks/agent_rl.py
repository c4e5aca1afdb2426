"""RL over the agent world, side by side: GRPO, ASPO and the reward shaping ASPO's paper rejects on calculator
chains with the tool; GRPO and IGPO on 4-5-hop lookup chains.

Every run trains a fresh copy of ``--model`` with ``steerable train rl`` (agent episodes as rollouts, the
environment's tokens masked out of the loss, reward = the environment's verdict) for the same ``--steps``
with the same ``--seed`` (the same prompts in the same order), then plays the split's held-out tasks
greedily. Printed per run: held-out accuracy ± its standard error, the difference to GRPO ± the paired
standard error (same tasks), the first tool call's token position (± se over the tasks that call) and its
share of the rollout, its ratio to GRPO's, the tool-call rate, and from training: the share of groups whose
rewards were all equal (``frac_zero_std``, no gradient under GRPO), whether the method's mechanism fired
(``fired``: the share of rollouts ASPO's shift or the shaping changed; IGPO's mean gain per rollout), tokens
per rollout sampled and written by the environment, and wall seconds. The lookup part also prints held-in
greedy accuracy against steps.

    OMP_NUM_THREADS=1 python benchmarks/agent_rl.py --part calc --steps 80 --lr 1e-4 --out runs/agent_rl
    OMP_NUM_THREADS=1 python benchmarks/agent_rl.py --part lookup --steps 200 --lr 1e-4 --eval-every 25 \
        --eval-n 100 --seed 0 --out runs/agent_rl_lookup200_s0    # and --seed 1
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from _common import rl_run, setup

PARTS = {
    "calc": ("builtin:agent:calculator:hard", ["grpo", "aspo", "aspo_reward_shaping"]),
    "lookup": ("builtin:agent:lookup:hard", ["grpo", "igpo"]),
}


def _se(xs: list[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def held_out(model_dir: str, task: str, n: int, max_tokens: int) -> dict:
    """Greedy episodes of the split's first ``n`` held-out tasks: per-task outcomes and where the first call falls."""
    from steerable.lm.loading import load_model
    from steerable.rl import agent
    from steerable.rl.inputs import char_to_token, first_line_at

    t = agent.parse_task(task)
    model, tok = load_model(model_dir, device="cpu")
    rows = agent.eval_rows(t, n)
    ep = agent.run_episodes(model, tok, [json.loads(r["task"]) for r in rows], 1, 0.0, max_tokens, t.tools, 0, t.marker)
    firsts, shares = [], []
    for text, ids in zip(ep.texts, ep.completion_ids, strict=True):
        at = first_line_at(text, t.marker)
        if at is not None:
            p = char_to_token(tok, ids, at)
            firsts.append(float(p))
            shares.append(p / max(1, len(ids)))
    return {**ep.stats, "solved": [float(s) for s in ep.solved], "first": firsts, "share": shares}


def train(algo: str, task: str, args, out: Path) -> dict:
    run_dir = out / f"{task.split(':')[2]}_{algo}"
    seconds, rows = rl_run(run_dir, model=args.model, task=task, algo=algo, steps=args.steps,
                           prompts_per_step=args.prompts_per_step, group=args.group,
                           max_completion=args.max_completion, lr=args.lr, eval_every=args.eval_every,
                           eval_n=args.eval_n, seed=args.seed)  # fmt: skip
    steps = [r for r in rows if "reward" in r]

    def mean(key: str) -> float:
        xs = [r[key] for r in steps if key in r]
        return sum(xs) / len(xs) if xs else float("nan")

    curve = [(r["step"], r["held_in_accuracy"]) for r in rows if "held_in_accuracy" in r and not r.get("final")]
    return {
        "dir": str(run_dir),
        "seconds": seconds,
        "zero_std": mean("frac_reward_zero_std"),  # TRL's: groups whose rewards are all equal
        # whether the method's mechanism fired: rollouts ASPO shifted, rollouts the shaping changed, IGPO's gains
        "fired": next(
            (mean(k) for k in ("adv/aspo_shifted_frac", "adv/shaping_fired_frac", "adv/gain_mean") if k in steps[0]),
            float("nan"),
        ),
        "env_tokens": mean("agent/env_tokens"),
        "generated_tokens": mean("agent/generated_tokens"),
        "train_reward_first": sum(r["reward"] for r in steps[:10]) / max(1, len(steps[:10])),
        "train_reward_last": sum(r["reward"] for r in steps[-10:]) / max(1, len(steps[-10:])),
        "curve": curve,
    }


def report(task: str, res: dict[str, dict]) -> None:
    base = res.get("grpo")
    print(f"\n{task}: held-out greedy on {len(next(iter(res.values()))['eval']['solved'])} tasks")
    head = (
        f"{'method':<22}{'accuracy':>15}{'vs grpo':>16}{'1st call (tok)':>17}{'x grpo':>8}{'share':>7}"
        f"{'tool rate':>10}{'zero-std':>9}{'fired':>7}{'env tok':>8}{'gen tok':>8}{'reward 1st->last 10':>21}{'s':>6}"
    )
    print(head)
    for name, r in res.items():
        e = r["eval"]
        n = len(e["solved"])
        acc = sum(e["solved"]) / n
        acc_se = math.sqrt(acc * (1 - acc) / n)
        diff = ""
        if base is not None and name != "grpo":
            d = [a - b for a, b in zip(e["solved"], base["eval"]["solved"], strict=True)]
            diff = f"{100 * sum(d) / n:+.1f} ± {100 * _se(d):.1f}"
        first = sum(e["first"]) / len(e["first"]) if e["first"] else float("nan")
        ratio = ""
        base_first = sum(base["eval"]["first"]) / len(base["eval"]["first"]) if base and base["eval"]["first"] else 0
        if base_first > 0 and e["first"]:
            ratio = f"{first / base_first:.2f}"
        share = sum(e["share"]) / len(e["share"]) if e["share"] else float("nan")
        t = r.get("train", {})
        rew = f"{t['train_reward_first']:.2f} -> {t['train_reward_last']:.2f}" if t else ""
        print(
            f"{name:<22}{100 * acc:>8.1f} ± {100 * acc_se:<4.1f}{diff:>16}{first:>9.1f} ± {_se(e['first']):<4.1f}"
            f"{ratio:>8}{share:>7.2f}{e['tool_call_rate']:>10.2f}{t.get('zero_std', float('nan')):>9.2f}"
            f"{t.get('fired', float('nan')):>7.3f}"
            f"{t.get('env_tokens', float('nan')):>8.1f}{t.get('generated_tokens', float('nan')):>8.1f}"
            f"{rew:>21}{t.get('seconds', float('nan')):>6.0f}"
        )
    curves = {k: r["train"]["curve"] for k, r in res.items() if "train" in r and r["train"]["curve"]}
    if curves:
        print("held-in greedy accuracy against steps:")
        for k, c in curves.items():
            print(f"  {k:<20}" + "  ".join(f"{s}:{100 * a:.0f}%" for s, a in c))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="calc,lookup", help="calc, lookup or both")
    ap.add_argument("--model", default="builtin:agent")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-completion", type=int, default=160)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--eval-n", type=int, default=50, help="held-in tasks per evaluation during training")
    ap.add_argument("--n", type=int, default=200, help="held-out tasks for the final evaluation")
    ap.add_argument("--out", default="runs/agent_rl")
    args = ap.parse_args()
    setup()
    from steerable.lm.loading import model_dir

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for part in args.part.split(","):
        task, algos = PARTS[part]
        res: dict[str, dict] = {"base": {"eval": held_out(model_dir(args.model), task, args.n, args.max_completion)}}
        for algo in algos:
            tr = train(algo, task, args, out)
            res[algo] = {"train": tr, "eval": held_out(tr["dir"], task, args.n, args.max_completion)}
            (out / f"{part}.json").write_text(json.dumps({"args": vars(args), "task": task, "runs": res}) + "\n")
        report(task, res)


if __name__ == "__main__":
    main()
