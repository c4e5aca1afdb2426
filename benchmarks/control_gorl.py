"""GoRL on PointNav against base BC and DSRL-SAC at equal environment steps, with and without the gate.

Each (arm, seed) is one ``steerable control gorl`` run; ``paper`` is the paper's schedule (every stage refits the
decoder on all its latent policy's rollouts), ``gated`` adds the gate (a stage's latent policy must beat the
decoder it steers on held-out episodes, else the decoder stays) and ``--refit-top``. DSRL-SAC runs with the
same seed for as many env steps as the gated GoRL run spent in all (latent training, rollouts, gate episodes).
Every success is on the same ``--eval-episodes`` seeded episodes (seed 10000 + seed); standard errors are
binomial over those episodes. Runs are written to ``--runs`` as they finish, so an interrupted benchmark resumes.

    OMP_NUM_THREADS=1 python benchmarks/control_gorl.py --seeds 0 --stages 2 --stage-steps 10000
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from _common import setup

POLICY = "src/steerable/control/builtin/pointnav/policy"


def se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0")
    p.add_argument("--arms", default="paper,gated")
    p.add_argument("--stages", type=int, default=2)
    p.add_argument("--stage-steps", type=int, default=10_000)
    p.add_argument("--rollouts", type=int, default=200)
    p.add_argument("--decoder-steps", type=int, default=3000)
    p.add_argument("--refit-top", type=float, default=0.5)
    p.add_argument("--eval-episodes", type=int, default=100)
    p.add_argument("--select-episodes", type=int, default=50)
    p.add_argument("--runs", default="runs/control_gorl")
    p.add_argument("--dsrl-from", default="", help="Read DSRL-SAC from this run's curve (a control_dsrl_na.py "
                   "SAC record, same seed and check episodes): its last check within the GoRL budget.")  # fmt: skip
    a = p.parse_args()
    setup()
    from steerable.control.evaluate import evaluate, summary
    from steerable.control.policies.diffusion_policy import DiffusionPolicy
    from steerable.control.policies.noise import load_noise_policy
    from steerable.control.steering.dsrl import DSRLController
    from steerable.control.training.dsrl import DSRLConfig, train_dsrl
    from steerable.control.training.gorl import GoRLConfig, train_gorl
    from steerable.control.worlds.envs import make_env

    runs = Path(a.runs)
    runs.mkdir(parents=True, exist_ok=True)
    n = a.eval_episodes
    print("| seed | arm | stage | decoder alone | latent on it | gate (latent / decoder, held-out) | refit on "
          "| env steps so far |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    finals = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        recs = {}
        for arm in a.arms.split(","):
            path = runs / f"gorl_{arm}_{seed}.json"
            if not path.exists():
                cfg = GoRLConfig(policy=POLICY, out=str(runs / f"gorl_{arm}_{seed}"), stages=a.stages,
                                 stage_steps=a.stage_steps, rollouts=a.rollouts, decoder_steps=a.decoder_steps,
                                 eval_episodes=n, seed=seed, gate=arm == "gated", select_episodes=a.select_episodes,
                                 refit_top=a.refit_top if arm == "gated" else 1.0)  # fmt: skip
                path.write_text(json.dumps(train_gorl(cfg, progress=True)))
            recs[arm] = rec = json.loads(path.read_text())
            spent = 0
            for r in rec["stages"]:
                spent += r["env_steps"] + r["rollout_env_steps"] + r.get("select_env_steps", 0)
                gate = f"{r['select_latent']:.2f} / {r['select_decoder']:.2f}" if "select_latent" in r else "off"
                refit = f"{r['refit_episodes']} eps ({r['refit_success']:.2f} succ.)" if r["refit"] else "held"
                print(f"| {seed} | {arm} | {r['stage']} | {r['decoder_success']:.2f} | {r['latent_success']:.2f} "
                      f"| {gate} | {refit} | {spent} |")  # fmt: skip
        budget = max(r["env_steps"] for r in recs.values())
        dpath = runs / f"dsrl_{seed}_{budget}.json"
        if a.dsrl_from and not dpath.exists():
            curve = json.loads(Path(a.dsrl_from).read_text())["curve"]
            row = max((r for r in curve if r["env_steps"] <= budget), key=lambda r: r["env_steps"])
            dpath.write_text(json.dumps({"env_steps": row["env_steps"], "success": row["success"]}))
        if not dpath.exists():
            out = runs / f"dsrl_{seed}_{budget}"
            train_dsrl(DSRLConfig(policy=POLICY, out=str(out), env_steps=budget, eval_every=0, seed=seed), False)
            ctl = DSRLController(DiffusionPolicy.load(POLICY), noise_policy=load_noise_policy(out / "sac.zip"))
            row = summary("dsrl", 1, evaluate(make_env("builtin:pointnav"), ctl, n, 10_000 + seed, progress=False))
            dpath.write_text(json.dumps({"env_steps": budget, "success": row["success"]}))
        finals.append((seed, recs, json.loads(dpath.read_text())))
    print()
    print("| seed | policy | env steps | success | SE (episodes) |")
    print("|---|---|---|---|---|")
    for seed, recs, dsrl in finals:
        base = next(iter(recs.values()))["stages"][0]["decoder_success"]
        print(f"| {seed} | base BC (eps ~ N(0, I)) | 0 | {base:.2f} | {se(base, n):.3f} |")
        for arm, rec in recs.items():
            last = rec["stages"][-1]
            print(f"| {seed} | GoRL {arm}: last latent on its decoder | {rec['env_steps']} | "
                  f"{last['latent_success']:.2f} | {se(last['latent_success'], n):.3f} |")  # fmt: skip
            f = rec["final_decoder_success"]
            print(f"| {seed} | GoRL {arm}: final decoder alone | {rec['env_steps']} | {f:.2f} | {se(f, n):.3f} |")
        s = dsrl["success"]
        print(f"| {seed} | DSRL-SAC | {dsrl['env_steps']} | {s:.2f} | {se(s, n):.3f} |")


if __name__ == "__main__":
    main()
