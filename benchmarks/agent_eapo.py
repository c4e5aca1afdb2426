"""EAPO (IterResearch) against outcome-only GRPO on the agent world: fewer rounds at equal accuracy?

Every arm trains a fresh copy of ``--model`` with ``steerable train rl`` (agent episodes as rollouts, the
environment's tokens out of the loss, reward = the environment's verdict) for the same ``--steps`` with the same
``--seed`` (the same prompts in the same order), then plays the split's held-out tasks greedily. Printed per arm,
side by side: held-out accuracy ± se and its paired difference to GRPO; rounds per episode (the environment steps
an episode took, ± se, and paired against GRPO: the quantity EAPO's discount pushes down); among solved episodes
the rounds and the rounds beyond the task's minimum (lookup: the live path's cells; maze: the shortest path);
from training: the share of groups with all rewards equal (``zero-std``: no gradient under GRPO), the share of
all-correct groups EAPO still trains (its discount ranks their rounds; ``fired``), tokens per rollout sampled
and written by the environment, and wall seconds. ``--gammas`` adds an EAPO arm per discount (1.0: rounds as
samples without the discount, which separates the per-round weighting from the discount).

    OMP_NUM_THREADS=1 python benchmarks/agent_eapo.py --task builtin:agent:lookup:hard --steps 60 --out runs/eapo
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from _common import rl_run, setup


def _mean_se(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return float("nan"), float("nan")
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def minimum_rounds(task: dict) -> int:
    """The fewest environment steps that can solve ``task`` (lookup: one ``get`` per cell of the live path;
    maze: the shortest path's moves; others: the task's step cap)."""
    if task["env"] == "lookup":
        from steerable.tasks.agent.envs.lookup import live_path

        return len(live_path(task["table"], task["start"]))
    if task["env"] == "maze":
        from steerable.tasks.agent.envs.maze import _find, distances

        return int(distances(task["grid"])[_find(task["grid"], "S")])
    return int(task.get("max_steps", 0))


def held_out(model_dir: str, task: str, n: int, max_tokens: int) -> dict:
    """Greedy episodes of the split's first ``n`` held-out tasks: per task solved, rounds and the minimum."""
    from steerable.lm.loading import load_model
    from steerable.rl import agent

    t = agent.parse_task(task)
    model, tok = load_model(model_dir, device="cpu")
    tasks = [json.loads(r["task"]) for r in agent.eval_rows(t, n)]
    ep = agent.run_episodes(model, tok, tasks, 1, 0.0, max_tokens, t.tools, 0, t.marker)
    return {
        "solved": [float(s) for s in ep.solved],
        "rounds": [float(s) for s in ep.env_steps],
        "minimum": [float(minimum_rounds(x)) for x in tasks],
        "generated_tokens": ep.stats["generated_tokens"],
    }


def train(arm: str, algo: str, options: dict, args, out: Path) -> dict:
    run_dir = out / arm
    seconds, rows = rl_run(run_dir, model=args.model, task=args.task, algo=algo, steps=args.steps,
                           prompts_per_step=args.prompts_per_step, group=args.group,
                           max_completion=args.max_completion, lr=args.lr, eval_every=0, eval_n=1, seed=args.seed,
                           options=options)  # fmt: skip
    steps = [r for r in rows if "reward" in r]

    def mean(key: str, part: list[dict] = steps) -> float:
        xs = [r[key] for r in part if key in r]
        return sum(xs) / len(xs) if xs else float("nan")

    return {
        "dir": str(run_dir),
        "seconds": seconds,
        "zero_std": mean("frac_reward_zero_std"),  # TRL's: groups whose rewards are all equal
        "fired": mean("adv/all_correct_trained_frac"),
        "env_tokens": mean("agent/env_tokens"),
        "generated_tokens": mean("agent/generated_tokens"),
        "reward_first": mean("reward", steps[:10]),
        "reward_last": mean("reward", steps[-10:]),
        "rounds_first": mean("agent/env_steps", steps[:10]),
        "rounds_last": mean("agent/env_steps", steps[-10:]),
    }


def report(task: str, res: dict[str, dict]) -> None:
    base = res.get("grpo")
    n = len(next(iter(res.values()))["eval"]["solved"])
    print(f"\n{task}: held-out greedy on {n} tasks (rounds = environment steps per episode)")
    head = (
        f"{'arm':<14}{'accuracy':>14}{'vs grpo':>15}{'rounds':>15}{'vs grpo':>16}{'rounds|solved':>15}"
        f"{'extra|solved':>13}{'zero-std':>9}{'fired':>7}{'env tok':>8}{'gen tok':>8}"
        f"{'train reward':>14}{'train rounds':>14}{'s':>6}"
    )
    print(head)
    for name, r in res.items():
        e = r["eval"]
        acc, acc_se = _mean_se(e["solved"])
        rounds, rounds_se = _mean_se(e["rounds"])
        d_acc = d_rounds = ""
        if base is not None and name != "grpo":
            da = _mean_se([a - b for a, b in zip(e["solved"], base["eval"]["solved"], strict=True)])
            dr = _mean_se([a - b for a, b in zip(e["rounds"], base["eval"]["rounds"], strict=True)])
            d_acc, d_rounds = f"{100 * da[0]:+.1f} ± {100 * da[1]:.1f}", f"{dr[0]:+.2f} ± {dr[1]:.2f}"
        ok = [i for i, s in enumerate(e["solved"]) if s]
        r_ok, _ = _mean_se([e["rounds"][i] for i in ok])
        extra, extra_se = _mean_se([e["rounds"][i] - e["minimum"][i] for i in ok])
        t = r.get("train", {})
        nan = float("nan")
        rew = f"{t['reward_first']:.2f} -> {t['reward_last']:.2f}" if t else ""
        rnd = f"{t['rounds_first']:.2f} -> {t['rounds_last']:.2f}" if t else ""
        print(
            f"{name:<14}{100 * acc:>7.1f} ± {100 * acc_se:<4.1f}{d_acc:>15}{rounds:>8.2f} ± {rounds_se:<4.2f}"
            f"{d_rounds:>16}{r_ok:>15.2f}{extra:>7.2f} ± {extra_se:<4.2f}{t.get('zero_std', nan):>8.2f}"
            f"{t.get('fired', nan):>7.2f}{t.get('env_tokens', nan):>8.1f}{t.get('generated_tokens', nan):>8.1f}"
            f"{rew:>14}{rnd:>14}{t.get('seconds', nan):>6.0f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="builtin:agent:lookup:hard")
    ap.add_argument("--model", default="builtin:agent")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-completion", type=int, default=160)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--gammas", default="0.995", help="one EAPO arm per discount, comma-separated")
    ap.add_argument("--n", type=int, default=200, help="held-out tasks for the evaluations")
    ap.add_argument("--out", default="runs/agent_eapo")
    args = ap.parse_args()
    setup()
    from steerable.lm.loading import model_dir

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict[str, dict] = {"base": {"eval": held_out(model_dir(args.model), args.task, args.n, args.max_completion)}}
    arms = [("grpo", "grpo", {})] + [(f"eapo γ={g}", "eapo", {"eapo_gamma": float(g)}) for g in args.gammas.split(",")]
    for arm, algo, options in arms:
        tr = train(arm.replace(" ", "_").replace("γ=", "g"), algo, options, args, out)
        res[arm] = {"train": tr, "eval": held_out(tr["dir"], args.task, args.n, args.max_completion)}
        (out / "results.json").write_text(json.dumps({"args": vars(args), "runs": res}) + "\n")
        print(f"{arm}: {tr['seconds']:.0f} s", flush=True)
    report(args.task, res)


if __name__ == "__main__":
    main()
