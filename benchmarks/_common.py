"""What every benchmark does first: a deliberate thread count and quiet transformers; and what the RL
benchmarks share: one fresh ``steerable train rl`` run read back from its metrics."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch


def setup() -> None:
    # on two shared cores the wrong thread count is 6-10x slower: take OMP_NUM_THREADS, else every core
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def rl_run(run_dir: Path, **fields) -> tuple[float, list[dict]]:
    """A fresh RL run in ``run_dir`` (never a resumed one) with ``fields`` of
    :class:`~steerable.rl.run.RLRunConfig`, on the CPU, no checkpoints: its wall seconds and ``metrics.jsonl``
    rows."""
    from steerable.rl.run import RLRunConfig, train_rl

    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = RLRunConfig(out=str(run_dir), minutes=None, save_every=10**6, device="cpu", **fields)
    t0 = time.perf_counter()
    train_rl(cfg, progress=False)
    seconds = time.perf_counter() - t0
    return seconds, [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


def wait_until_up(url: str, server, seconds: float = 120) -> None:
    """Return once ``url``'s ``/health`` answers 200; exit when ``server`` (a Popen) dies or ``seconds`` pass."""
    import httpx

    deadline = time.time() + seconds
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.time() > deadline or server.poll() is not None:
            raise SystemExit("the server did not come up")
        time.sleep(0.3)
