"""Past-token prediction's four arms side by side on CueNav: no history, history, history + PTP, and history + PTP
with self-verification (best of M by past consistency), on the same seeded episodes.

    steerable control data --env builtin:cuenav --out runs/cue.npz --episodes 400 --seed 0
    steerable control train-policy --env builtin:cuenav --data runs/cue.npz --steps 15000 --out runs/cue-none
    steerable control train-policy --env builtin:cuenav --data runs/cue.npz --history 10 --stride 2 \\
        --steps 15000 --out runs/cue-h2
    steerable control train-policy --env builtin:cuenav --data runs/cue.npz --history 10 --stride 2 --past 10 \\
        --steps 15000 --out runs/cue-ptp2
    python benchmarks/control_ptp.py --none runs/cue-none --history runs/cue-h2 --ptp runs/cue-ptp2 --m 8

Every arm meets the same starts, sides, winds and gusts (episode i at
seed*1000003 + i). Beside success (with its standard error) and the
outcomes, the verified arm logs whether verification fired: of its verified
predictions made before the gate opened (the agent still at the start), the
share whose M candidates disagreed on the side (the sign of their mean
vertical push) and the share where the kept candidate's side differs from
the first candidate's (what plain sampling would have run).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


class SideLog:
    """Wraps a PastConsistency scorer: per scored set of candidates, their sides and which one scored best."""

    def __init__(self, scorer, past: int, hold: int) -> None:
        self.scorer, self.past, self.hold = scorer, past, hold
        self.range, self.calls, self.forward_tokens = scorer.range, 0, 0
        self.sets: list[tuple[list[float], int, bool]] = []  # (sides, best index, before the gate opened)

    def score(self, conds, samples):
        scores = self.scorer.score(conds, samples)
        self.calls = self.scorer.calls
        sides = [float(p.chunks[0][self.past :, 1].mean().sign()) for p in samples]
        held = len(samples[0].executed) < self.hold  # steps taken so far: the gate still holds the agent
        self.sets.append((sides, max(range(len(scores)), key=scores.__getitem__), held))
        return scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--none", required=True, help="policy trained without history")
    ap.add_argument("--history", required=True, help="policy trained with history, no past actions")
    ap.add_argument("--ptp", required=True, help="policy trained with history and --past > 0")
    ap.add_argument("--m", default="8", help="candidates of self-verification (a comma list: one arm each)")
    ap.add_argument("--env", default="builtin:cuenav")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    import torch

    from steerable.control.evaluate import evaluate, summary
    from steerable.control.policies.diffusion_policy import DiffusionPolicy
    from steerable.control.steering.controller import Controller
    from steerable.control.steering.ptp import PTP
    from steerable.control.worlds.envs import make_env

    torch.set_num_threads(1)
    arms = [
        ("no history", args.none, 1),
        ("history", args.history, 1),
        ("history + PTP", args.ptp, 1),
        *((f"history + PTP + verification (M = {m})", args.ptp, m) for m in map(int, args.m.split(","))),
    ]
    env = make_env(args.env)
    rows = []
    for label, path, m in arms:
        policy = DiffusionPolicy.load(path)
        ctrl = PTP(policy, m=m) if m > 1 else Controller(policy)
        log = None
        if m > 1:
            log = ctrl.scorer = SideLog(ctrl.scorer, policy.past, getattr(env, "hold_steps", 0))
        eps = evaluate(env, ctrl, args.episodes, args.seed, progress=False)
        row = {"arm": label, "policy": path, "history": policy.history, "stride": policy.stride,
               "past": policy.past, **summary("ptp" if m > 1 else "base", m, eps)}  # fmt: skip
        if log is not None:
            held = [s for s in log.sets if s[2]]
            row["verified_before_gate"] = len(held)
            row["candidates_disagree"] = round(sum(len(set(s[0])) > 1 for s in held) / max(1, len(held)), 4)
            row["kept_other_side"] = round(sum(s[0][s[1]] != s[0][0] for s in held) / max(1, len(held)), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'arm':40} {'success':>8} {'+-':>6} {'wrong goal':>10} {'timeout':>8} {'collision':>9} {'NFE/step':>9}")
    for r in rows:
        o = r["outcomes"]
        print(f"{r['arm']:40} {r['success']:8.3f} {r['success_se']:6.3f} {o.get('wrong goal', 0):10d} "
              f"{o.get('timeout', 0):8d} {o.get('collision', 0):9d} {r['nfe_per_step']:9.2f}")  # fmt: skip
    for v in rows[3:]:
        print(f"\n{v['arm']}, before the gate opened: {v['verified_before_gate']} verified predictions, candidates "
              f"disagreed on the side in {v['candidates_disagree']:.3f}, the kept one was on the other side from the "
              f"first candidate in {v['kept_other_side']:.3f}", end="")  # fmt: skip
    print()
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
