"""Scaling runs spread over Ray workers give the numbers of a local run, into the same resumable file."""

import pytest

ray = pytest.importorskip("ray")

from steerable.bench.distributed import RayExecutor, ScaleSetup  # noqa: E402
from steerable.bench.scale import read_results, run_scale  # noqa: E402
from steerable.tasks.answers import make_checker  # noqa: E402
from steerable.tasks.loader import load_task  # noqa: E402

pytestmark = pytest.mark.slow  # starts a local Ray cluster

SETUP = ScaleSetup(model="builtin", scorer="builtin-prm", device="cpu", max_step_tokens=32, max_tokens=160)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def executor(local_ray):
    """Two workers for the module: each starts a process and loads the model and PRM, the slow part of a Ray run."""
    ex = RayExecutor(SETUP, 0.8, 1.0, workers=2)
    yield ex
    ex.close()


def _rows(path):
    return {
        (r["item"], r["method"], r["budget"]): {k: v for k, v in r.items() if k != "seconds"}
        for r in read_results(path)
    }


def test_ray_run_equals_local_run_and_resumes(tmp_path, executor):
    items = load_task("builtin:hard", limit=2)  # a job per worker in the Ray half
    checker = make_checker("builtin")
    built = SETUP.build()
    methods, budgets = ["sc", "pf"], [2]
    run_scale(
        items,
        methods,
        budgets,
        built.process_factory(0.8, 1.0),
        built.scorer,
        checker,
        tmp_path / "local",
        seed=3,
        progress=False,
    )
    # half the work done locally, the rest on Ray: the file resumes, nothing is redone
    run_scale(
        items,
        ["sc"],
        budgets,
        built.process_factory(0.8, 1.0),
        built.scorer,
        checker,
        tmp_path / "ray",
        seed=3,
        progress=False,
    )
    summary = run_scale(
        items, methods, budgets, None, None, checker, tmp_path / "ray", seed=3, progress=False, executor=executor
    )
    assert _rows(tmp_path / "ray" / "results.jsonl") == _rows(tmp_path / "local" / "results.jsonl")
    assert len(read_results(tmp_path / "ray" / "results.jsonl")) == len(items) * 2  # no row twice
    assert {r["method"] for r in summary["rows"]} == {"sc", "pf"}


def test_ray_calibrates_token_budgets_on_a_worker(tmp_path, executor):
    items = load_task("builtin:hard", limit=2)
    summary = run_scale(
        items, ["sc"], [200], None, None, make_checker("builtin"), tmp_path, progress=False, unit="tokens",
        executor=executor,
    )  # fmt: skip
    assert summary["tokens_per_sample"] > 10
    assert all(r["generated_tokens"] <= 200 for r in read_results(tmp_path / "results.jsonl"))


def test_bad_ray_settings_are_clear_errors():
    from steerable.errors import ConfigError

    with pytest.raises(ConfigError, match="ray-workers"):
        RayExecutor(SETUP, 0.8, 1.0, workers=0)
