"""What a scaling run needs, as data a worker can rebuild; and a Ray executor that spreads jobs over workers.

:class:`ScaleSetup` names the model (a directory, ``builtin``, or a server
URL), the scorer and the process settings; ``build()`` makes the generator,
scorer and checker, and ``process_factory()`` the per-method processes. The
CLI builds it once here; each Ray worker builds its own replica from the same
setup (or, for a server URL, its own client of the shared server).

:class:`RayExecutor` (extra ``[ray]``) runs (item, method, budget) jobs on an
actor pool and yields rows as they finish; ``run_scale`` writes them into the
same resumable ``results.jsonl``. Every job's seed depends only on its item's
index and every run clears the scorer's cache, so a Ray run gives the numbers a
local run gives (seconds aside).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from steerable.config import check, opt, unescape
from steerable.errors import ConfigError, InputError
from steerable.lm.loading import ModelConfig


@dataclass(frozen=True)
class ScaleSetup(ModelConfig):
    """The model, scorer and process settings of a scaling run (the ``steerable scale`` flags that build them)."""

    model: str = opt("builtin", "Model directory, 'builtin', or a server URL (http://HOST:PORT/v1).", min_len=1)
    scorer: str = opt(
        "builtin-prm",
        "builtin-prm, oracle, none, judge, genrm, prm:PATH, orm:PATH, a PRM directory, or remote[:NAME] "
        "(the server's /v1/score).",
    )
    delimiter: str = opt("auto", "Step delimiter (auto: \\n for builtin, \\n\\n otherwise).", min_len=1)
    max_step_tokens: int = opt(64, "Token cap per step.", ge=1, le=100_000)
    max_tokens: int = opt(320, "Token cap per sample.", ge=1, le=1_000_000)
    answer_format: Literal["builtin", "boxed"] = opt("builtin", "builtin (A: n) or boxed (math-verify).")
    answer_regex: str | None = opt(None, "Regex whose first group is the answer.", min_len=1)
    model_name: str | None = opt(None, "With a server URL: the model to ask for (default: its first).")
    api_key: str | None = opt(None, "With a server URL: its API key.", envvar="STEERABLE_API_KEY")
    http_mode: Literal["completions", "chat"] = opt(
        "completions", "With a server URL: completions, or chat (continue_final_message)."
    )
    concurrency: int = opt(32, "With a server URL: requests in flight at once.", ge=1, le=4096)

    def __post_init__(self) -> None:
        check(self)
        if self.delimiter != "auto":
            unescape(self.delimiter, "--delimiter")  # a lone surrogate fails here, before any model loads

    @property
    def remote(self) -> bool:
        return self.model.startswith(("http://", "https://"))

    def build(self) -> Built:
        from steerable.search.registry import make_scorer
        from steerable.tasks.answers import make_checker

        checker = make_checker(self.answer_format, self.answer_regex)
        client = None
        if self.remote:
            from steerable.lm.http import HTTPClient, HTTPGenerator

            client = HTTPClient(self.model, api_key=self.api_key, concurrency=self.concurrency)
            gen = HTTPGenerator(client, self.model_name, step_mode=self.http_mode)
            name = gen.model
        else:
            from steerable.lm.local import LocalGenerator

            gen = LocalGenerator.from_pretrained(self.model, device=self.device, dtype=self.dtype)
            name = self.model
        if self.scorer == "remote" or self.scorer.startswith("remote:"):
            if client is None:
                raise InputError("--scorer remote scores on the server: give --model http://HOST:PORT/v1")
            from steerable.reward.http import HTTPScorer

            scorer = HTTPScorer(client, self.scorer.partition(":")[2] or None)
        else:
            scorer = make_scorer(self.scorer, device="cpu" if self.device == "auto" else self.device, generator=gen)
        if self.delimiter == "auto":
            delim = "\n" if name == "builtin" else "\n\n"
        else:
            delim = unescape(self.delimiter, "--delimiter")
        return Built(self, gen, scorer, checker, delim)


@dataclass
class Built:
    setup: ScaleSetup
    generator: object
    scorer: object
    checker: object
    delimiter: str
    extra: dict = field(default_factory=dict)

    def process_factory(self, temperature: float, top_p: float) -> Callable[[str], object]:
        from steerable.lm.types import SamplingParams

        s = self.setup

        def make_process(method: str):
            params = SamplingParams(temperature=0.0 if method == "greedy" else temperature, top_p=top_p)
            kw = dict(
                delimiter=self.delimiter,
                params=params,
                max_step_tokens=s.max_step_tokens,
                max_steps=64,
                max_tokens=s.max_tokens,
            )
            from steerable.search.lm_process import LMProcess

            return LMProcess(self.generator, **kw)

        return make_process


class _Worker:
    """One model replica (or one client of a shared server) on a Ray worker."""

    def __init__(self, setup: ScaleSetup, temperature: float, top_p: float, threads: int):
        import torch
        from transformers.utils import logging

        torch.set_num_threads(threads)
        logging.set_verbosity_error()
        logging.disable_progress_bar()
        self.built = setup.build()
        self.make_process = self.built.process_factory(temperature, top_p)
        self.strategies: dict = {}

    def calibrate(self, items) -> float:
        from steerable.bench.scale import measure_tokens_per_sample

        return measure_tokens_per_sample(self.make_process, items)

    def run(self, job, methods, seed, unit, tps) -> dict:
        from steerable.bench.scale import run_job
        from steerable.search.registry import make_strategy

        for m in methods:
            if m not in self.strategies:
                self.strategies[m] = make_strategy(m, self.built.checker.extract)
        i, item, method, budget = job
        b = self.built
        return run_job(
            self.strategies, self.make_process, b.scorer, b.checker, i, item, method, budget, seed, unit, tps
        )


class RayExecutor:
    """Jobs over a pool of Ray actors: ``address`` None starts a local Ray instance of ``workers`` CPUs."""

    def __init__(
        self,
        setup: ScaleSetup,
        temperature: float,
        top_p: float,
        address: str | None = None,
        workers: int | None = None,
        threads_per_worker: int = 1,
    ):
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs Ray: pip install 'steerable[ray]'") from None
        if workers is not None and workers < 1:
            raise ConfigError(f"--ray-workers must be >= 1 (got {workers})")
        self.ray = ray
        if not ray.is_initialized():
            kw: dict = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
            if address:
                kw["address"] = address
            else:
                kw["num_cpus"] = workers or os.cpu_count() or 1
            try:
                ray.init(**kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(f"cannot start or reach Ray at {address or 'a local instance'}: {e}") from None
        cpus = int(ray.available_resources().get("CPU", 1))
        n = workers or max(1, cpus // threads_per_worker)
        actor = ray.remote(num_cpus=threads_per_worker)(_Worker)
        self.actors = [actor.remote(setup, temperature, top_p, threads_per_worker) for _ in range(n)]

    def calibrate(self, items: Sequence) -> float:
        return self.ray.get(self.actors[0].calibrate.remote(list(items)))

    def run(self, jobs: list[tuple], methods: Sequence[str], seed: int, unit: str, tps: float | None) -> Iterator[dict]:
        ray = self.ray
        methods = list(methods)
        pending = {}
        queue = list(jobs)
        idle = list(self.actors)
        while queue or pending:
            while idle and queue:
                a = idle.pop()
                pending[a.run.remote(queue.pop(0), methods, seed, unit, tps)] = a
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                idle.append(pending.pop(ref))
                yield ray.get(ref)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
