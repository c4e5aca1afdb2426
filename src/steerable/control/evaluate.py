"""Run a controller for N seeded episodes: success, return, NFE per control step, seconds per step.

Episode i starts the env at seed ``item_seed(seed, i)`` and the controller's
sampling at ``stream(seed, i)``, so two methods run with the same ``--seed`` meet
the same starts, winds and gusts. Results are appended one JSON line per
episode to ``--resume FILE`` (when given) and a rerun skips the episodes
already there, so a long evaluation that was interrupted resumes.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from steerable.errors import InputError
from steerable.streams import item_seed, stream


@dataclass(frozen=True)
class Episode:
    index: int
    success: bool
    ret: float
    steps: int  # env steps taken
    outcome: str
    nfe: int
    scorer_calls: int
    predictions: int  # policy queries
    seconds: float
    satisfied: bool | None = None  # STL tasks only
    fork_steps: int = 0  # env steps a lookahead search ran in forked copies
    path: tuple[tuple[float, float], ...] = ()


def _fresh(env):
    """An independent copy of ``env`` for one episode (the built-in envs clone; any gymnasium env deep-copies)."""
    return env.clone() if hasattr(env, "clone") else copy.deepcopy(env)


def run_block(env, controller, indices: list[int], seed: int, keep_path: bool = False) -> list[Episode]:
    """Episodes ``indices`` side by side: every control step queries the controller once for all live ones."""
    envs = [_fresh(env) for _ in indices]
    seen, infos = [], []
    for e, i in zip(envs, indices, strict=True):
        obs, info = e.reset(seed=item_seed(seed, i))
        seen.append([obs])
        infos.append(info)
    controller.reset([stream(seed, i) for i in indices])
    n = len(indices)
    total, steps, seconds, ended = [0.0] * n, [0] * n, [0.0] * n, [False] * n
    paths = [[tuple(map(float, infos[r].get("pos", seen[r][0][:2])))] for r in range(n)]
    live = list(range(n))
    while live:
        t0 = time.perf_counter()
        actions = controller.act(live, seen, envs)
        share = (time.perf_counter() - t0) / len(live)  # the batched call's time, split evenly
        for r in live:
            seconds[r] += share
            for a in actions[r]:
                obs, rew, term, trunc, infos[r] = envs[r].step(a)
                seen[r].append(obs)
                total[r] += float(rew)
                steps[r] += 1
                if keep_path:
                    paths[r].append(tuple(map(float, infos[r].get("pos", obs[:2]))))
                if term or trunc:
                    ended[r] = True
                    break
        live = [r for r in live if not ended[r]]
    return [
        Episode(
            index=i,
            success=bool(infos[r].get("success", False)),
            ret=round(total[r], 4),
            steps=steps[r],
            outcome=str(infos[r].get("outcome", "")),
            nfe=controller.nfe[r],
            scorer_calls=controller.scorer_calls[r],
            predictions=controller.predictions[r],
            seconds=round(seconds[r], 5),
            satisfied=infos[r].get("satisfied"),
            fork_steps=controller.fork_steps[r],
            path=tuple(paths[r]) if keep_path else (),
        )
        for r, i in enumerate(indices)
    ]


def evaluate(
    env,
    controller,
    episodes: int,
    seed: int,
    resume: str | Path | None = None,
    progress: bool = True,
    keep_path: bool = False,
    run: dict | None = None,
    batch: int = 50,
) -> list[Episode]:
    """``run`` (the settings that made the episodes) heads the resume file; a file of another run is refused.

    Episodes run ``batch`` at a time; each is a function of (seed, its index) alone.
    """
    done: dict[int, Episode] = {}
    head = json.dumps({"run": {**(run or {}), "seed": seed}}, sort_keys=True)
    if resume is not None and Path(resume).exists() and Path(resume).stat().st_size:
        lines = Path(resume).read_text().splitlines()
        if lines[0] != head:
            raise InputError(f"{resume} holds episodes of another run ({lines[0][:120]}): pass another --resume file")
        for n, line in enumerate(lines[1:], 2):
            try:
                row = json.loads(line)
                ep = Episode(**{**row, "path": tuple(map(tuple, row.get("path", ())))})
            except (json.JSONDecodeError, TypeError) as e:
                raise InputError(f"{resume}:{n} is not an episode record ({e}): delete the file to start over") from e
            done[ep.index] = ep
    out = open(resume, "a") if resume is not None else None  # noqa: SIM115 - appended to as episodes finish
    if out is not None and out.tell() == 0:
        out.write(head + "\n")
    todo = [i for i in range(episodes) if i not in done]
    try:
        for b in range(0, len(todo), batch):
            for ep in run_block(env, controller, todo[b : b + batch], seed, keep_path):
                done[ep.index] = ep
                if out is not None:
                    out.write(json.dumps(asdict(ep)) + "\n")
            if out is not None:
                out.flush()
            if progress:
                rate = np.mean([done[j].success for j in done])
                print(f"{controller.name}: {len(done)}/{episodes} episodes, success {rate:.3f}", file=sys.stderr)
    finally:
        if out is not None:
            out.close()
    return [done[i] for i in range(episodes)]


def summary(method: str, budget: int, eps: list[Episode]) -> dict:
    """The row ``steerable control eval`` prints: success, return, NFE and seconds per control step."""
    steps = sum(e.steps for e in eps) or 1
    preds = sum(e.predictions for e in eps) or 1
    row = {
        "method": method,
        "budget": budget,
        "episodes": len(eps),
        "success": round(float(np.mean([e.success for e in eps])), 4),
        "success_se": round(float(np.std([e.success for e in eps]) / max(1, len(eps) - 1) ** 0.5), 4),
        "return": round(float(np.mean([e.ret for e in eps])), 4),
        "nfe_per_step": round(sum(e.nfe for e in eps) / steps, 3),
        "nfe_per_prediction": round(sum(e.nfe for e in eps) / preds, 3),
        "scorer_calls_per_step": round(sum(e.scorer_calls for e in eps) / steps, 3),
        "fork_steps_per_step": round(sum(e.fork_steps for e in eps) / steps, 3),
        "seconds_per_step": round(sum(e.seconds for e in eps) / steps, 6),
        "outcomes": {k: sum(e.outcome == k for e in eps) for k in sorted({e.outcome for e in eps})},
    }
    if any(e.satisfied is not None for e in eps):
        row["satisfied"] = round(float(np.mean([bool(e.satisfied) for e in eps])), 4)
    return row


def plot(env, eps: list[Episode], out: str | Path, title: str = "") -> None:
    """Draw each episode's path on the 2-D map (green: success, red: failure) with the obstacles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for x, y, r in getattr(env.config, "obstacles", ()):
        ax.add_patch(plt.Circle((x, y), r, color="0.6"))
    region = getattr(getattr(env, "spec", None), "region", None)
    if region is not None:
        ax.add_patch(plt.Circle(region[:2], region[2], color="tab:blue", alpha=0.3))
    for e in eps:
        if e.path:
            p = np.asarray(e.path)
            ax.plot(p[:, 0], p[:, 1], color="tab:green" if e.success else "tab:red", lw=0.6, alpha=0.5)
    x0, x1, y0, y1 = env.config.arena
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
