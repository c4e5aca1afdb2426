"""Fuzz ``steerable serve`` from its own OpenAPI schema with schemathesis: requests sent and 5xx seen.

Starts ``steerable serve --prm builtin --steer noise=...`` (a random vector
artifact, so steering is exercised) in its own process with the production
limits but ``--max-n`` and ``--max-tokens`` (small, so the valid requests it
finds finish in seconds), fetches ``/openapi.json`` and, for every operation, sends
``--examples`` bodies that follow the schema and as many that break it
(schemathesis' positive and negative modes). Prints the count of each status
per operation and every 5xx with its body. The goal is 0.

    python benchmarks/serve_fuzz.py [--examples 500] [--max-n 8] [--max-tokens 64] [--port 8951] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import wait_until_up


def _artifact(directory: Path) -> Path:
    import torch

    from steerable.lm.local import LocalGenerator
    from steerable.steer.artifact import SteeringVector, fingerprint

    gen = LocalGenerator.from_pretrained("builtin", device="cpu")
    v = torch.randn(gen.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    art = SteeringVector("mean", "add", fingerprint(gen.model, gen.tokenizer), vector=v * 3, layers=(1,))
    return art.save(directory / "noise")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=500, help="Bodies per operation and mode.")
    ap.add_argument("--port", type=int, default=8951)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    import httpx
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis.errors import Unsatisfiable

    url = f"http://127.0.0.1:{args.port}"
    tmp = Path(tempfile.mkdtemp())
    art = _artifact(tmp)
    exe = Path(sys.executable).parent / "steerable"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [str(exe), "serve", "--port", str(args.port), "--prm", "builtin", "--steer", f"noise={art}"]
    cmd += ["--max-n", str(args.max_n), "--max-tokens", str(args.max_tokens)]
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    statuses: Counter = Counter()
    errors: list[str] = []
    t0 = time.time()
    try:
        wait_until_up(url, server)
        schema = schemathesis.openapi.from_url(url + "/openapi.json")
        for result in schema.get_all_operations():
            op = result.ok()
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

                @seed(args.seed)
                @given(op.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=args.examples,
                    deadline=None,
                    database=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                def send(case):
                    try:
                        r = case.call(base_url=url, timeout=600)
                    except Exception as e:  # a dropped connection would be a failure of ours too
                        statuses[(case.operation.label, type(e).__name__)] += 1
                        errors.append(f"{case.operation.label} {case.body!r:.300} -> {type(e).__name__}")
                        return
                    statuses[(case.operation.label, r.status_code)] += 1
                    if r.status_code >= 500:
                        errors.append(f"{case.operation.label} {case.body!r:.300} -> {r.status_code} {r.text[:300]}")

                with contextlib.suppress(Unsatisfiable):  # a GET without parameters has no invalid form
                    send()
        alive = httpx.get(url + "/health", timeout=5).status_code == 200
    finally:
        server.terminate()
        server.wait(30)
    sent = sum(statuses.values())
    print(
        f"schemathesis {schemathesis.__version__}, {args.examples} examples per operation and mode, seed {args.seed}, "
        f"--max-n {args.max_n} --max-tokens {args.max_tokens}"
    )
    for (label, status), count in sorted(statuses.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        print(f"  {label:<28} {status!s:>6} {count:>6}")
    print(
        f"requests sent: {sent}; 5xx or dropped: {len(errors)}; health after: {'ok' if alive else 'DOWN'}; "
        f"{time.time() - t0:.0f} s"
    )
    for e in errors[:20]:
        print("  ", e)


if __name__ == "__main__":
    main()
