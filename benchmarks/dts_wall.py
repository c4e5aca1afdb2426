"""DTS and DTS* against best-of-N in seconds at equal NFE on the digits world, side by side in one run.

Arms: best-of-N, and DTS / DTS* (C = 1, alpha = 0.5, branching every 10 of
50 DDIM steps) with each ``--leaf-batches`` value (1: the paper's sequential
loop; more: that many rollouts in flight, denoised together). Every item
(target i mod 10, seed i) runs every arm in turn, so load from other jobs on
the machine falls on all arms alike. Prints per arm: seconds per item (mean
± SE), its ratio to best-of-N's, judge success ± SE, NFE, denoiser calls per
item (batched forward passes) and rollouts.

    OMP_NUM_THREADS=1 python benchmarks/dts_wall.py --targets 60 --budget 16 --leaf-batches 1,16,32
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from _common import setup


def arms(leaf_batches: list[int]) -> list[tuple[str, str, dict]]:
    out = [("bon", "bon", {})]
    for reg in ("dts", "dts-star"):
        for lb in leaf_batches:
            out.append((f"{reg} lb={lb}", reg, {"widen_c": 1.0, "widen_alpha": 0.5, "leaf_batch": lb}))
    return out


def mean_se(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    var = sum((x - m) ** 2 for x in xs) / max(len(xs) - 1, 1)
    return m, math.sqrt(var / len(xs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=60)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--leaf-batches", default="1,16,32")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    setup()
    from steerable.diffusion.digits import judge
    from steerable.diffusion.registry import make_strategy
    from steerable.diffusion.worlds import load_world

    world = load_world("builtin:digits")
    j = judge()
    process = world.process()
    calls = [0]
    forward = process.denoiser.forward

    def counted(*a, **k):
        calls[0] += 1
        return forward(*a, **k)

    process.denoiser.forward = counted
    table = [
        (name, make_strategy(reg, j.answer, opts))
        for name, reg, opts in arms([int(x) for x in args.leaf_batches.split(",")])
    ]
    seen = {name: {"seconds": [], "ok": [], "nfe": [], "calls": [], "rollouts": []} for name, _ in table}
    for i in range(args.targets):
        target = str(i % 10)
        for name, strat in table:
            calls[0] = 0
            t0 = time.perf_counter()
            res = strat.run(process, world.reward, args.budget, target, seed=i)
            s = seen[name]
            s["seconds"].append(time.perf_counter() - t0)
            s["ok"].append(float(res.answer == target))
            s["nfe"].append(res.cost.nfe)
            s["calls"].append(calls[0])
            s["rollouts"].append(res.info.get("rollouts", args.budget))
    bon_s = mean_se(seen["bon"]["seconds"])[0]
    rows = []
    for name, _ in table:
        s = seen[name]
        sec, sec_se = mean_se(s["seconds"])
        ok, ok_se = mean_se(s["ok"])
        row = {
            "arm": name,
            "items": args.targets,
            "budget": args.budget,
            "seconds": round(sec, 4),
            "seconds_se": round(sec_se, 4),
            "ratio_to_bon": round(sec / bon_s, 2),
            "success": round(ok, 3),
            "success_se": round(ok_se, 3),
            "nfe": round(sum(s["nfe"]) / len(s["nfe"]), 1),
            "denoiser_calls": round(sum(s["calls"]) / len(s["calls"]), 1),
            "rollouts": round(sum(s["rollouts"]) / len(s["rollouts"]), 1),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
