"""its_hub against steerable on the same served model: self-consistency and particle filtering, same budgets.

``steerable serve --prm builtin`` serves the built-in model and PRM. Then, on
the same items (the first ``--items`` of ``builtin:hard``) at budgets 4, 8, 16:

- **its_hub** 1.2.0 (installed into ``.venv-itshub`` on first use, never a
  dependency of ours): ``SelfConsistency`` and ``ParticleFiltering`` over its
  ``OpenAICompatibleLanguageModel`` (vLLM mode: ``continue_final_message``),
  ``StepGeneration(step_token="\\n", stop_token="A:")``, and a PRM adapter that
  calls our ``/v1/score``;
- **steerable over HTTP**: our ``sc`` and ``pf`` on :class:`LMProcess` over the HTTP generator with
  the remote scorer (the same server, the same PRM);
- **steerable local**: the same strategies on the local generator and PRM.

Temperature 0.8 everywhere. Accuracy is checked by our verifier on every
method's final text; tokens are counted on the server (``/metrics``), wall time
per (method, budget) over all items. Prints the table and the time ratios of
its_hub's PF to ours.

    python benchmarks/vs_its_hub.py [--items 20] [--budgets 4,8,16] [--port 8941]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ITS_HUB = "its-hub[lm]==1.2.0"


def server_tokens(url: str) -> dict[str, float]:
    """Prompt and completion tokens the server has counted so far (its Prometheus text)."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    out = {"prompt": 0.0, "completion": 0.0}
    for kind in out:
        m = re.search(rf'^steerable_tokens_total{{kind="{kind}"}} ([0-9.e+]+)$', text, re.M)
        out[kind] = float(m.group(1)) if m else 0.0
    return out


# ---- its_hub's half, run in .venv-itshub ----------------------------------------------------------


def peer(spec_path: Path) -> None:
    import asyncio

    import httpx
    from its_hub import SelfConsistency
    from its_hub.api import AbstractProcessRewardModel
    from its_hub.core.algorithms.particle_gibbs import ParticleFiltering
    from its_hub.core.lms.openai_lm import OpenAICompatibleLanguageModel
    from its_hub.core.lms.step_generation import StepGeneration

    spec = json.loads(spec_path.read_text())
    url = spec["url"]

    class RemotePRM(AbstractProcessRewardModel):
        """its_hub's PRM interface over steerable's /v1/score."""

        def score(self, prompt, steps):
            return asyncio.run(self.ascore(prompt, steps))

        async def ascore(self, prompt, steps):
            async with httpx.AsyncClient(timeout=600) as http:
                r = await http.post(url + "/v1/score", json={"prompt": prompt, "partials": list(steps)})
                r.raise_for_status()
                return r.json()["scores"]

    lm = OpenAICompatibleLanguageModel(endpoint=url + "/v1", api_key="none", model_name="builtin", temperature=0.8)
    answer = lambda text: (re.findall(r"A: (-?\d+)", text) or [None])[-1]  # noqa: E731
    results = []
    for budget in spec["budgets"]:
        for name in ("sc", "pf"):
            if name == "sc":
                algo = SelfConsistency(answer)
            else:
                sg = StepGeneration(
                    max_steps=40, step_token="\n", stop_token="A:", temperature=0.8, include_stop_str_in_output=True
                )
                algo = ParticleFiltering(sg, RemotePRM())
            before = server_tokens(url)
            t0 = time.perf_counter()
            texts = []
            for item in spec["items"]:
                out = algo.infer(lm, item["prompt"], budget)
                texts.append(out["content"] if isinstance(out, dict) else str(out))
            seconds = time.perf_counter() - t0
            after = server_tokens(url)
            results.append(
                {
                    "system": "its_hub",
                    "method": name,
                    "budget": budget,
                    "texts": texts,
                    "seconds": seconds,
                    "completion_tokens": after["completion"] - before["completion"],
                    "prompt_tokens": after["prompt"] - before["prompt"],
                }
            )
            print(f"its_hub {name}@{budget}: {seconds:.1f} s", file=sys.stderr, flush=True)
    Path(spec["out"]).write_text(json.dumps(results))


# ---- our half ----------------------------------------------------------------------------------------


def _ensure_env(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"creating {venv} with {ITS_HUB} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", ITS_HUB, "httpx"], check=True)
    return py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--budgets", default="4,8,16")
    ap.add_argument("--port", type=int, default=8941)
    ap.add_argument("--venv", default=".venv-itshub")
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        return peer(Path(args.peer))
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import setup

    setup()
    from steerable.lm.http import HTTPClient, HTTPGenerator
    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.reward.http import HTTPScorer
    from steerable.reward.prm import TokenClassifierPRM
    from steerable.search.lm_process import LMProcess
    from steerable.search.registry import make_strategy
    from steerable.tasks.answers import make_checker
    from steerable.tasks.loader import load_task

    py = _ensure_env(Path(args.venv))
    budgets = [int(b) for b in args.budgets.split(",")]
    items = load_task("builtin:hard", limit=args.items)
    checker = make_checker("builtin")
    url = f"http://127.0.0.1:{args.port}"
    exe = Path(sys.executable).parent / "steerable"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    server = subprocess.Popen(
        [str(exe), "serve", "--port", str(args.port), "--prm", "builtin", "--max-n", "256"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not come up") from None
                time.sleep(0.3)
        with tempfile.TemporaryDirectory() as tmp:
            spec = Path(tmp) / "spec.json"
            out = Path(tmp) / "out.json"
            spec.write_text(
                json.dumps(
                    {
                        "url": url,
                        "budgets": budgets,
                        "out": str(out),
                        "items": [{"prompt": it.prompt, "answer": it.answer} for it in items],
                    }
                )
            )
            subprocess.run([str(py), __file__, "--peer", str(spec)], check=True, env=env)
            rows += json.loads(out.read_text())

        client = HTTPClient(url + "/v1", concurrency=64)
        remote = HTTPGenerator(client, "builtin")
        remote_prm = HTTPScorer(client)
        local = LocalGenerator.from_pretrained("builtin", device="cpu")
        local_prm = TokenClassifierPRM.from_pretrained("builtin", device="cpu")
        kw = dict(delimiter="\n", params=SamplingParams(temperature=0.8), max_step_tokens=64, max_tokens=320)
        for budget in budgets:
            for name in ("sc", "pf"):
                strategy = make_strategy(name, checker.extract)
                for system, make, scorer in (
                    ("steerable http", lambda: LMProcess(remote, **kw), remote_prm),
                    ("steerable local", lambda: LMProcess(local, **kw), local_prm),
                ):
                    before = server_tokens(url)
                    gen0 = make().usage.generated_tokens
                    t0 = time.perf_counter()
                    texts = []
                    for i, it in enumerate(items):
                        if hasattr(scorer, "clear_cache"):
                            scorer.clear_cache()
                        res = strategy.run(make(), None if name == "sc" else scorer, budget, it.prompt, seed=i)
                        texts.append(res.text)
                    seconds = time.perf_counter() - t0
                    after = server_tokens(url)
                    tokens = after["completion"] - before["completion"]
                    if system == "steerable local":
                        tokens = make().usage.generated_tokens - gen0
                    rows.append(
                        {
                            "system": system,
                            "method": name,
                            "budget": budget,
                            "texts": texts,
                            "seconds": seconds,
                            "completion_tokens": tokens,
                            "prompt_tokens": after["prompt"] - before["prompt"],
                        }
                    )
                    print(f"{system} {name}@{budget}: {seconds:.1f} s", file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait(30)

    print(f"\nbuilt-in model and PRM, builtin:hard first {len(items)} items, T 0.8, 2 threads per process")
    print(f"{'system':<16} {'method':<6} {'budget':>6} {'accuracy':>9} {'gen tok/item':>13} {'s/item':>8}")
    by = {}
    for r in rows:
        acc = sum(checker.correct(t, it.answer) for t, it in zip(r["texts"], items, strict=True)) / len(items)
        by[(r["system"], r["method"], r["budget"])] = r | {"accuracy": acc}
        print(
            f"{r['system']:<16} {r['method']:<6} {r['budget']:>6} {acc:>9.1%} "
            f"{r['completion_tokens'] / len(items):>13.0f} {r['seconds'] / len(items):>8.2f}"
        )
    print("\ntime of its_hub / time of steerable (same method, same budget):")
    for budget in budgets:
        for name in ("sc", "pf"):
            theirs = by[("its_hub", name, budget)]["seconds"]
            http = by[("steerable http", name, budget)]["seconds"]
            loc = by[("steerable local", name, budget)]["seconds"]
            print(f"  {name}@{budget}: vs steerable over HTTP {theirs / http:.1f}x, vs local {theirs / loc:.1f}x")


if __name__ == "__main__":
    main()
