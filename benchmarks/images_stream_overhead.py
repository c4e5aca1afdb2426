"""What watching a served image run costs on the engine, without the HTTP transport: the same request's run
(``ImageRun``) plain and with its events collected in a list (the streamed path minus the event loop).

Runs alternate plain / watched per seed; the first 2 seeds of each are warm-up. Prints mean ± standard error
(seconds) per (method, budget).

    python benchmarks/images_stream_overhead.py [--seeds 12]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=12)
    args = ap.parse_args()
    import torch

    from steerable.serve import build
    from steerable.serve.schemas import ImageRequest

    torch.set_num_threads(1)
    _, app = build("builtin:digits")
    routes = next(r.endpoint.__self__ for r in app.routes if getattr(r, "path", "") == "/v1/images/generations")

    def mean_se(xs: list[float]) -> str:
        return f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs) / len(xs) ** 0.5:.3f}"

    print(f"builtin:digits, digit 3, seeds 2..{args.seeds - 1} (0, 1 warm-up); seconds, mean ± standard error")
    print(f"{'method':<8} {'budget':>6} {'plain':>16} {'watched':>16} {'events':>7}")
    for method, budget in [("bon", 4), ("bon", 16), ("fk", 4), ("fk", 16)]:
        times: dict[str, list[float]] = {"plain": [], "watched": []}
        events: list = []
        for seed in range(args.seeds):
            for way in times:
                run = routes.prepare(ImageRequest(prompt="3", seed=seed, scaling={"method": method, "budget": budget}))
                if way == "watched":
                    events = []
                    run.sink = events.append
                t0 = time.perf_counter()
                run()
                if seed >= 2:
                    times[way].append(time.perf_counter() - t0)
        print(f"{method:<8} {budget:>6} {mean_se(times['plain']):>16} {mean_se(times['watched']):>16} {len(events):>7}")


if __name__ == "__main__":
    main()
