"""``steerable diffuse sample``: run one strategy on a built-in world and draw what it found.

Writes ``samples.png`` (every candidate, labelled with its reward and the
judge's verdict; the answer framed) and ``result.json`` (the chosen sample's
reward and verdict, the cost, the strategy's diagnostics).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from steerable.config import check, opt
from steerable.errors import ConfigError


@dataclass(frozen=True)
class DiffuseSampleConfig:
    """What ``steerable diffuse sample`` runs."""

    out: Path = opt(..., "Directory for samples.png and result.json.")
    model: str = opt("builtin:digits", "builtin:digits or builtin:mixture.")
    target: str = opt("3", "The digit to steer to (digits); ignored by the mixture.")
    method: str = opt("fk", "bon, fk, fk-max, fk-sum, fk-sample, dts, dts-star, dps or fk-dps.")
    budget: int = opt(8, "Samples / particles (a budget of N spends at most N x steps denoiser calls).", ge=1, le=4096)
    seed: int = opt(0, "Same seed, same samples.", ge=0, lt=2**62)
    steps: int = opt(50, "DDIM steps.", ge=1, le=1000)
    eta: float = opt(1.0, "DDIM eta: 1 stochastic (SMC, tree search), 0 deterministic.", ge=0.0, le=1.0)
    guidance_scale: float = opt(1.0, "Reward-gradient guidance's lambda for dps / fk-dps.", ge=0.0, le=1e4)

    def __post_init__(self) -> None:
        check(self)


def run_sample(cfg: DiffuseSampleConfig, options: dict | None = None) -> dict:
    from steerable.diffusion.guidance import RewardGuidance
    from steerable.diffusion.registry import make_strategy, method
    from steerable.diffusion.worlds import load_world
    from steerable.search.base import no_answer

    world = load_world(cfg.model)
    meta = method(cfg.method)
    if world.name == "digits":
        from steerable.diffusion.digits import judge, parse_target

        parse_target(cfg.target)
        extract, prompt = judge().answer, cfg.target
    else:
        extract, prompt = no_answer, ""
    strategy = make_strategy(cfg.method, extract, options)
    guidance = RewardGuidance(world.reward, scale=cfg.guidance_scale) if meta.guided else None
    process = world.process(eta=cfg.eta, num_steps=cfg.steps, guidance=guidance)
    res = strategy.run(process, world.reward, cfg.budget, prompt, seed=cfg.seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    record = {
        "model": cfg.model,
        "method": res.method,
        "budget": cfg.budget,
        "target": prompt or None,
        "reward": world.reward.score([prompt], res.sample[None])[0],
        "judge": res.answer,
        "success": None if world.name != "digits" else res.answer == prompt,
        "cost": {k: v for k, v in vars(res.cost).items() if v},
        "info": {k: v for k, v in res.info.items() if k != "ess"},
        "candidates": len(res.candidates),
    }
    draw(world.name, res, prompt, cfg.out / "samples.png")
    (cfg.out / "result.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def draw(world: str, res, prompt: str, path: Path) -> None:
    """Every candidate with its reward and verdict; the answer framed in green (digits) or starred (mixture)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cands = list(res.candidates)
    if world == "mixture":
        from steerable.diffusion.mixture import CENTER, means

        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        mu = means()
        ax.scatter(mu[:, 0], mu[:, 1], marker="+", c="grey", label="data modes")
        xs = torch.stack([torch.as_tensor(c.sample) for c in cands]).reshape(-1, 2)
        ax.scatter(xs[:, 0], xs[:, 1], s=12, label="candidates")
        ax.scatter([float(res.sample[0])], [float(res.sample[1])], marker="*", s=160, c="green", label="answer")
        ax.scatter([CENTER[0]], [CENTER[1]], marker="x", c="red", label="reward centre")
        ax.set_xlim(-1.1, 1.1)
        ax.set_ylim(-1.1, 1.1)
        ax.legend(fontsize=7)
        ax.set_title(f"{res.method} @ {res.budget}: {len(cands)} candidates")
    else:
        if world != "digits":
            raise ConfigError(f"no drawing for world {world!r}")
        cols = min(8, len(cands))
        rows = (len(cands) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.55 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, c in zip(axes.flat, cands, strict=False):
            ax.imshow(torch.as_tensor(c.sample).reshape(8, 8).clamp(-1, 1).numpy(), cmap="gray_r", vmin=-1, vmax=1)
            ok = c.answer == prompt
            ax.set_title(f"r={c.score:.2f}\njudge {c.answer} {'ok' if ok else 'no'}", fontsize=7)
            if torch.equal(torch.as_tensor(c.sample), torch.as_tensor(res.sample)):
                for side in ax.spines.values():
                    side.set_visible(True)
                    side.set_color("green")
                    side.set_linewidth(3)
                ax.axis("on")
                ax.set_xticks([])
                ax.set_yticks([])
        fig.suptitle(f"{res.method} @ {res.budget}, target {prompt}: answer judged {res.answer}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
