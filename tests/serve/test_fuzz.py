"""Fuzz the server from its own OpenAPI schema (schemathesis): valid and invalid bodies, never a 5xx.

A bounded, derandomized run that takes seconds; ``benchmarks/serve_fuzz.py``
runs a longer one against a server in its own process and prints the counts.
"""

from __future__ import annotations

from collections import Counter

import pytest

schemathesis = pytest.importorskip("schemathesis")
httpx = pytest.importorskip("httpx")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

pytestmark = pytest.mark.slow  # hundreds of generated requests


@pytest.fixture(scope="module")
def small(serve_app, artifact):
    """A server with small limits, so the valid requests the fuzzer finds finish fast."""
    from steerable.serve import build

    engine, app = build(
        "builtin",
        [f"noise={artifact}"],
        prm="builtin",
        device="cpu",
        max_n=4,
        max_tokens=16,
        max_budget=4,
        max_request_tokens=512,
    )
    s = serve_app(app)
    yield s
    s.close()


def test_fuzzing_the_schema_finds_no_server_error(small):
    statuses, errors = fuzz(small.url)
    assert not errors, errors
    assert sum(statuses.values()) >= 80
    assert statuses[("POST /v1/completions", 200)] > 0 and statuses[("POST /v1/chat/completions", 200)] > 0
    assert httpx.get(small.url + "/health").status_code == 200


def test_fuzzing_the_images_schema_finds_no_server_error(serve_app):
    pytest.importorskip("diffusers")
    from steerable.serve import build

    _, app = build("builtin:digits", max_n=2, max_budget=2, max_request_nfe=200)
    s = serve_app(app)
    try:
        statuses, errors = fuzz(s.url)
        assert not errors, errors
        assert sum(statuses.values()) >= 30  # 25 valid and 25 invalid bodies, and the GET routes
        assert statuses[("POST /v1/images/generations", 200)] > 0
        assert httpx.get(s.url + "/health").status_code == 200
    finally:
        s.close()


def fuzz(url: str) -> tuple[Counter, list[str]]:
    """Valid and invalid bodies for every route of the server's own schema: (status counts, 5xx answers)."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    statuses: Counter = Counter()
    errors = []
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=25,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def send(case):
                r = case.call(base_url=url, timeout=60)
                statuses[(case.operation.label, r.status_code)] += 1
                if r.status_code >= 500:
                    errors.append(f"{case.operation.label} {case.body!r:.200} -> {r.status_code} {r.text[:200]}")

            try:
                send()
            except Unsatisfiable:  # no invalid input exists for a route without parameters
                assert mode is schemathesis.GenerationMode.NEGATIVE and op.method.upper() == "GET"
    return statuses, errors
