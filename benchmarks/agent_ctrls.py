"""CTRLS against plain sampling on held-out mazes: accuracy and diversity of solutions, side by side.

Per maze, N episodes of each arm from the same seeds (row r of every arm draws from the same token stream):
plain sampling at each temperature of a sweep, and CTRLS (every turn steered by the latent action its policy
picks) at its temperature. Accuracy is the share of episodes that reach the goal; diversity the number of
distinct correct solutions per maze, a solution being the sequence of cells walked (bumping into a wall moves
nothing, so it makes no new solution). Both are averaged over mazes with standard errors across mazes. "At
equal accuracy": plain sampling's distinct correct solutions interpolated along its temperature sweep at
CTRLS's accuracy (the sweep's accuracy falls as the temperature rises).

    python benchmarks/agent_ctrls.py --mazes 50 --n 16 --temperatures 0.5,0.7,1.0,1.3 --ctrls-temperatures 0.7,1.0
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

from _common import setup


def cells(env, text: str) -> tuple:
    """The cells a transcript walks (its solution), read by replaying it on a fresh copy of the maze."""
    env = env.clone()
    walked = [env.pos]
    for line in text.split("\n"):
        if env.done:
            break
        if line.startswith("= "):
            continue
        env.step(line)
        if env.pos != walked[-1]:
            walked.append(env.pos)
    return tuple(walked)


def mean_se(xs: list[float]) -> tuple[float, float]:
    m = statistics.fmean(xs)
    return m, (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mazes", type=int, default=30)
    ap.add_argument("--n", type=int, default=16, help="episodes per maze and arm")
    ap.add_argument("--split", default="hard")
    ap.add_argument("--temperatures", default="0.5,0.7,1.0,1.3", help="plain sampling's sweep")
    ap.add_argument("--ctrls-temperatures", default="1.0", help="CTRLS's arms (its token sampling temperature)")
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--policy", default="", help="train-ctrls directory (empty: the shipped one)")
    ap.add_argument("--epsilon", type=float, default=0.0, help="CTRLS's share of uniform latent actions")
    ap.add_argument("--strength", type=float, default=0.0, help="CTRLS's steering strength (0: the policy's own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the rows here too")
    args = ap.parse_args()
    setup()

    from steerable.agents.ctrls import Ctrls, steered_episodes
    from steerable.agents.process import AgentProcess, episode
    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.streams import item_seed
    from steerable.tasks.agent.data import split_tasks

    gen = LocalGenerator.from_pretrained("builtin:agent", device="cpu", chat_template="never")
    acts = Ctrls(policy=args.policy, strength=args.strength).actions(gen.model)
    tasks = split_tasks("maze", args.split, args.mazes, seed=args.seed)
    arms = [("plain", float(t)) for t in args.temperatures.split(",") if t]
    arms += [("ctrls", float(t)) for t in args.ctrls_temperatures.split(",") if t]
    rows = []
    for arm, temp in arms:
        proc = AgentProcess(gen, SamplingParams(temperature=temp, top_p=args.top_p), max_steps=16)
        acc, distinct, distinct_all, chosen = [], [], [], [0] * acts.k
        u0, t0 = proc.usage, time.perf_counter()
        for i, task in enumerate(tasks):
            cond = episode(task)
            seed = item_seed(args.seed, i)
            if arm == "plain":
                state = proc.init(cond, args.n, seed)
                while not all(proc.is_terminal(state)):
                    proc.propose(state)
            else:
                state, steps, _ = steered_episodes(proc, cond, args.n, acts, args.epsilon, seed)
                for a in steps.actions:
                    chosen[a] += 1
            texts = proc.preview(state)
            solved = [e.solved for e in state.envs]
            acc.append(sum(solved) / args.n)
            distinct.append(len({cells(cond.env, t) for t, ok in zip(texts, solved, strict=True) if ok}))
            distinct_all.append(len({cells(cond.env, t) for t in texts}))
        used = proc.usage - u0
        episodes = args.n * len(tasks)
        a, a_se = mean_se(acc)
        d, d_se = mean_se(distinct)
        row = {
            "arm": arm, "temperature": temp, "accuracy": round(a, 4), "accuracy_se": round(a_se, 4),
            "distinct_correct": round(d, 3), "distinct_correct_se": round(d_se, 3),
            "distinct_all": round(statistics.fmean(distinct_all), 3),
            "gen_tokens_per_episode": round(used.generated_tokens / episodes, 2),
            "env_steps_per_episode": round(used.env_steps / episodes, 2), "tool_calls": used.tool_calls,
            "seconds": round(time.perf_counter() - t0, 1),
        }  # fmt: skip
        if arm == "ctrls":
            row["latent_actions_chosen"] = chosen
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(f"\n{args.mazes} held-out {args.split} mazes x {args.n} episodes per arm, top-p {args.top_p}, "
          f"seed {args.seed}, CTRLS strength {acts.strength}, epsilon {args.epsilon}")  # fmt: skip
    print("| arm | T | accuracy | distinct correct / maze | distinct all / maze | gen tok / ep | env steps / ep | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arm']} | {r['temperature']} | {r['accuracy']:.3f} ± {r['accuracy_se']:.3f} | "
              f"{r['distinct_correct']:.2f} ± {r['distinct_correct_se']:.2f} | {r['distinct_all']:.2f} | "
              f"{r['gen_tokens_per_episode']:.1f} | {r['env_steps_per_episode']:.2f} | "
              f"{r['seconds']:.0f} |")  # fmt: skip
    plain = sorted((r for r in rows if r["arm"] == "plain"), key=lambda r: r["accuracy"])
    for ctrls in (r for r in rows if r["arm"] == "ctrls"):
        for lo, hi in zip(plain, plain[1:], strict=False):
            if lo["accuracy"] <= ctrls["accuracy"] <= hi["accuracy"] and hi["accuracy"] > lo["accuracy"]:
                w = (ctrls["accuracy"] - lo["accuracy"]) / (hi["accuracy"] - lo["accuracy"])
                d = lo["distinct_correct"] + w * (hi["distinct_correct"] - lo["distinct_correct"])
                print(f"plain sampling at the accuracy of CTRLS at T={ctrls['temperature']} ({ctrls['accuracy']:.3f}; "
                      f"interpolated between T={lo['temperature']} and T={hi['temperature']}): {d:.2f} distinct "
                      f"correct solutions per maze against CTRLS's {ctrls['distinct_correct']:.2f}")  # fmt: skip
                break
        else:
            print(f"CTRLS at T={ctrls['temperature']}: accuracy {ctrls['accuracy']:.3f} lies outside plain sampling's "
                  "sweep: widen --temperatures")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
