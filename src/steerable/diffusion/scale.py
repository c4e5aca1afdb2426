"""What ``steerable diffuse scale`` hands the shared resumable runner (``steerable.bench.scale``): items and jobs.

Items are targets x seeds: ``builtin:digits`` item i asks for digit i mod 10
(its answer, checked by the judge); ``builtin:mixture`` items are seeds of the
one mixture task. A job is one (item, method, budget) run; its row carries
what the runner summarises (judge success as ``correct``, ``nfe``,
``reward_calls``, ``seconds``) plus the reward of the answer and, for the
mixture, the answer itself, from which the summary computes the distance of
each (method, budget)'s answers to the exact tilted target.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from steerable.errors import SteerableError
from steerable.streams import item_seed
from steerable.tasks.loader import Item


def items(world: str, limit: int) -> list[Item]:
    if world == "digits":
        return [Item(f"digit{i % 10}-{i // 10}", str(i % 10), str(i % 10)) for i in range(limit)]
    return [Item(f"seed{i}", "", "") for i in range(limit)]


@dataclass
class DiffusionExecutor:
    """Runs diffusion jobs one after another here (the runner's executor contract: ``run`` yields rows)."""

    world_spec: str
    options: Mapping[str, Mapping] = field(default_factory=dict)  # method -> strategy options
    guidance_scale: float = 1.0
    steps: int = 50

    def __post_init__(self) -> None:
        from steerable.diffusion.worlds import load_world

        self.world = load_world(self.world_spec)

    def extract(self):
        if self.world.name == "digits":
            from steerable.diffusion.digits import judge

            return judge().answer
        from steerable.search.base import no_answer

        return no_answer

    def strategy(self, method: str):
        from steerable.diffusion.registry import make_strategy

        return make_strategy(method, self.extract(), self.options.get(method))

    def process(self, method: str):
        from steerable.diffusion.guidance import RewardGuidance
        from steerable.diffusion.registry import method as lookup

        guided = lookup(method).guided
        return self.world.process(
            num_steps=self.steps, guidance=RewardGuidance(self.world.reward, self.guidance_scale) if guided else None
        )

    def run(self, jobs: list[tuple], methods: Sequence[str], seed: int, *_) -> Iterator[dict]:
        strategies = {m: self.strategy(m) for m in methods}
        processes = {m: self.process(m) for m in methods}
        for i, item, method, budget in jobs:
            yield self.job(strategies[method], processes[method], i, item, method, budget, seed)

    def job(self, strategy, process, i: int, item: Item, method: str, budget: int, seed: int) -> dict:
        row: dict = {"item": item.id, "method": method, "budget": budget, "gold": item.answer}
        t0 = time.perf_counter()
        try:
            res = strategy.run(process, self.world.reward, budget, item.prompt, seed=item_seed(seed, i))
            row.update(
                answer=res.answer,
                correct=self.world.name == "digits" and res.answer == item.answer,
                reward=round(self.world.reward.score([item.prompt], res.sample[None])[0], 5),
                nfe=res.cost.nfe,
                reward_calls=res.cost.scorer_calls,
                seconds=res.cost.seconds,
                candidates=len(res.candidates),
            )
            if self.world.name == "mixture":
                row["sample"] = [round(float(v), 6) for v in res.sample.reshape(-1)]
            for key in ("resamples", "expansions_below_root"):
                if key in res.info:
                    row[key] = res.info[key]
        except SteerableError as e:  # one bad item is recorded and the run goes on
            row.update(error=str(e), correct=False, seconds=round(time.perf_counter() - t0, 4))
        return row


def mixture_distances(rows: list[dict], lam: float) -> dict[tuple[str, int], dict]:
    """(method, budget) -> distance of its answers to the exact target of tilt ``lam``."""
    import torch

    from steerable.diffusion.mixture import distance

    groups: dict[tuple[str, int], list] = {}
    for r in rows:
        if "sample" in r:
            groups.setdefault((r["method"], r["budget"]), []).append(r["sample"])
    return {k: distance(torch.tensor(v), lam) for k, v in groups.items() if len(v) > 1}
