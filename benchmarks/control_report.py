"""Control methods side by side on the same seeded episodes: success, return, NFE and seconds per control step.

    python benchmarks/control_report.py --episodes 200 --seed 0 \\
        --methods base,vgps:8,vgps:16,base:1,rti:1,rti:2,rti:3,rti:2:renoise,dsrl --noise-policy runs/dsrl/sac.zip

Each entry is METHOD[:BUDGET[:MODE]]: ``base:1`` runs one action per
prediction (the execution horizon RTI uses), ``vgps:K`` K chunks by Q,
``rti:K'[:direct|renoise[:coarse|paper]]`` (``rti:3:direct:paper``: the
paper's K', the last K' of every training timestep), ``tgpo:N[:random|bon|mh]``
(allocations scored, the search over them; ``--tgpo DIR`` from ``steerable control tgpo``),
``search:N[:STRATEGY]``. Every method meets the same starts, winds and gusts
(episode i at seed*1000003 + i). Episodes are appended to
``--runs DIR/METHOD.jsonl`` as they finish, so an interrupted report resumes.
Seconds per step are wall time on whatever machine runs this: compare them
as ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="builtin:pointnav")
    ap.add_argument("--policy", default="builtin")
    ap.add_argument("--critic", default="builtin")
    ap.add_argument("--noise-policy", default="builtin")
    ap.add_argument("--tgpo", default="builtin", help="tgpo: the directory of `steerable control tgpo`")
    ap.add_argument("--methods", default="base,vgps:8,vgps:16")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="runs/control_report")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    import numpy as np
    import torch

    from steerable.control.evaluate import evaluate, summary
    from steerable.control.registry import EvalConfig, load_policy, make_controller
    from steerable.control.steering.stl_guide import path_diversity
    from steerable.control.worlds.envs import make_env

    torch.set_num_threads(1)
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    rows = []
    for entry in args.methods.split(","):
        method, *rest = entry.split(":")
        budget = int(rest[0]) if rest else 1
        mode = rest[1] if len(rest) > 1 else ""
        schedule = rest[2] if len(rest) > 2 else "coarse"
        execute = budget if method == "base" and rest else 0
        options = {
            "vgps": {"critic": args.critic},
            "search": {"critic": args.critic, "strategy": mode or "bon"},
            "rti": {"mode": mode or "direct", "schedule": schedule},
            "dsrl": {"noise_policy": args.noise_policy},
            "tgpo": {"tgpo": args.tgpo, "search": mode or "bon"},
        }.get(method, {})
        cfg = EvalConfig(env=args.env, method=method, budget=budget, episodes=args.episodes, seed=args.seed,
                         policy=args.policy, execute=execute)  # fmt: skip
        policy = load_policy(cfg, options)
        controller = make_controller(cfg, policy, options)
        run = {"entry": entry, "policy": args.policy, "critic": args.critic, "noise_policy": args.noise_policy}
        log = Path(args.runs) / f"{entry.replace(':', '_')}.jsonl"
        stl = args.env.endswith("stlnav")
        eps = evaluate(make_env(args.env), controller, args.episodes, args.seed, log, run=run, keep_path=stl)
        row = {**summary(method, budget, eps), "entry": entry}
        if stl:  # diversity of the trajectories that satisfied phi
            row["diversity"] = round(path_diversity([np.asarray(e.path) for e in eps if e.satisfied]), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'method':16} {'success':>8} {'+-':>6} {'return':>8} {'NFE/step':>9} {'s/step':>9} {'sat':>6} {'div':>6}")
    for r in rows:
        print(f"{r['entry']:16} {r['success']:8.3f} {r['success_se']:6.3f} {r['return']:8.3f} "
              f"{r['nfe_per_step']:9.2f} {r['seconds_per_step']:9.5f} {r.get('satisfied', float('nan')):6.3f} "
              f"{r.get('diversity', float('nan')):6.3f}")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
