"""The ``steerable`` command: one sub-command per job; this module only wires."""

from __future__ import annotations

import codecs
import json
import os
import sys
from pathlib import Path

import typer

from steerable.errors import InputError, SteerableError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Steer generative policies: activations, sampling and weights.",
)
builtin_app = typer.Typer(no_args_is_help=True, help="The built-in world: model, PRM, evaluation.")
app.add_typer(builtin_app, name="builtin")
from steerable.cli_steer import steer_app  # noqa: E402

app.add_typer(steer_app, name="steer")
from steerable.cli_control import control_app  # noqa: E402

app.add_typer(control_app, name="control")
train_app = typer.Typer(no_args_is_help=True, help="Change weights: reinforcement learning on TRL.")
app.add_typer(train_app, name="train")

DEVICE = typer.Option("auto", help="cpu, cuda, cuda:N or auto.")
DTYPE = typer.Option("float32", help="float32, bfloat16 or float16.")


def _threads() -> None:
    """Two shared cores run 6-10x slower with the wrong thread count: use OMP_NUM_THREADS or all cores."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _generator(model: str, device: str, dtype: str):
    from steerable.lm.local import LocalGenerator

    _threads()
    _quiet_transformers()
    return LocalGenerator.from_pretrained(model, device=device, dtype=dtype)


def _read_prompts(prompts: list[str], prompts_file: Path | None) -> list[str]:
    out = list(prompts)
    if prompts_file is not None:
        from steerable.tasks.loader import read_jsonl

        for n, row in read_jsonl(prompts_file, "a 'prompt' field"):
            if not isinstance(row.get("prompt"), (str, list)):
                raise InputError(f'{prompts_file}:{n} has no \'prompt\' field: write {{"prompt": "..."}} per line')
            out.append(row["prompt"])
    if not out:
        raise InputError("no prompts given: pass prompts as arguments or --prompts FILE.jsonl")
    return [codecs.decode(p, "unicode_escape") if isinstance(p, str) and "\\" in p else p for p in out]


@app.command()
def generate(
    prompts: list[str] = typer.Argument(None, help="Prompts (\\n and other escapes are understood)."),
    prompts_file: Path | None = typer.Option(None, "--prompts", help="JSONL file with a 'prompt' field per line."),
    model: str = typer.Option("builtin", help="Model directory, or 'builtin'."),
    temperature: float = typer.Option(1.0, help="0 for greedy."),
    top_p: float = typer.Option(1.0, help="Nucleus mass in (0, 1]."),
    top_k: int = typer.Option(0, help="Keep the k most likely tokens; 0 disables."),
    max_new_tokens: int = typer.Option(128, help="Tokens to generate at most."),
    n: int = typer.Option(1, help="Samples per prompt."),
    stop: list[str] = typer.Option([], help="Stop string (repeatable; escapes such as \\n understood)."),
    seed: int | None = typer.Option(None, help="Seed for sampling."),
    batch_size: int = typer.Option(64, help="Prompts per batch."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per prompt: text, choices and usage."),
    device: str = DEVICE,
    dtype: str = DTYPE,
) -> None:
    """Sample completions."""
    from steerable.lm.types import SamplingParams, Usage
    from steerable.tasks.builtin.evaluate import generate_batched

    texts = _read_prompts(prompts or [], prompts_file)
    params = SamplingParams(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        max_new_tokens=max_new_tokens,
        n=n,
        stop=tuple(codecs.decode(s, "unicode_escape") for s in stop),
        seed=seed,
    )
    gen = _generator(model, device, dtype)
    comps = generate_batched(gen, texts, params, batch_size=batch_size)
    for i, prompt in enumerate(texts):
        mine = [c for c in comps if c.prompt_index == i]
        usage = sum((c.usage for c in mine), Usage())
        if as_json:
            obj = {
                "prompt": prompt,
                "text": mine[0].text,
                "choices": [
                    {"text": c.text, "finish_reason": c.finish_reason, "tokens": len(c.token_ids)} for c in mine
                ],
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "generated_tokens": usage.generated_tokens,
                    "forward_tokens": usage.forward_tokens,
                },
            }
            typer.echo(json.dumps(obj))
        else:
            for c in mine:
                typer.echo(c.text)
                if n > 1 or len(texts) > 1:
                    typer.echo("---")


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--{name} takes comma-separated numbers (got {text!r})") from None


@app.command()
def scale(
    task: str = typer.Option("builtin:hard", help="builtin:easy|medium|hard|all, or a JSONL file (prompt, answer)."),
    methods: str = typer.Option("greedy,sc,bon,wbon,beam,pf,epf", help="Comma-separated strategies."),
    budgets: str = typer.Option("1,4,16", help="Comma-separated budgets (samples / particles / simulations)."),
    budget_unit: str = typer.Option(
        "samples", help="samples, or tokens: each budget caps the tokens a run may generate."
    ),
    tokens_per_sample: float | None = typer.Option(
        None, help="With token budgets, width = budget // this (default: measured from greedy solutions)."
    ),
    scorer: str = typer.Option(
        "builtin-prm",
        help="builtin-prm, oracle, none, judge, genrm, prm:PATH, orm:PATH, a PRM directory, or remote[:NAME] "
        "(the server's /v1/score).",
    ),
    out: Path = typer.Option(..., help="Output directory (results.jsonl, summary.json, plot); reruns resume."),
    model: str = typer.Option("builtin", help="Model directory, 'builtin', or a server URL (http://HOST:PORT/v1)."),
    model_name: str | None = typer.Option(None, help="With a server URL: the model to ask for (default: its first)."),
    api_key: str | None = typer.Option(None, envvar="STEERABLE_API_KEY", help="With a server URL: its API key."),
    http_mode: str = typer.Option(
        "completions", help="With a server URL: completions, or chat (continue_final_message)."
    ),
    concurrency: int = typer.Option(32, help="With a server URL: requests in flight at once."),
    ray: bool = typer.Option(False, "--ray", help="Spread items over Ray workers (extra [ray])."),
    ray_address: str | None = typer.Option(None, help="A Ray cluster to join (default: start a local one)."),
    ray_workers: int | None = typer.Option(None, help="Ray workers (default: one per CPU)."),
    limit: int | None = typer.Option(None, help="Items to use (default: all; 200 for built-in splits)."),
    temperature: str = typer.Option("0.8", help="Sampling temperature; a comma list sweeps it."),
    top_p: str = typer.Option("1.0", help="Nucleus mass; a comma list sweeps it (with every temperature)."),
    delimiter: str = typer.Option("auto", help="Step delimiter (auto: \\n for builtin, \\n\\n otherwise)."),
    max_step_tokens: int = typer.Option(64, help="Token cap per step."),
    max_tokens: int = typer.Option(320, help="Token cap per sample."),
    answer_format: str = typer.Option("builtin", help="builtin (A: n) or boxed (math-verify)."),
    answer_regex: str | None = typer.Option(None, help="Regex whose first group is the answer."),
    seed: int = typer.Option(0, help="Same seed, same results."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    device: str = DEVICE,
    dtype: str = DTYPE,
) -> None:
    """Inference-time scaling: accuracy against compute for each method and budget."""
    from steerable.bench.distributed import ScaleSetup
    from steerable.bench.scale import run_scale
    from steerable.lm.types import SamplingParams
    from steerable.search.registry import make_strategy
    from steerable.tasks.answers import make_checker
    from steerable.tasks.loader import load_task

    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    checker = make_checker(answer_format, answer_regex)
    for m in method_list:
        make_strategy(m, checker.extract)
    if budget_unit not in ("samples", "tokens"):
        raise InputError(f"--budget-unit must be samples or tokens (got {budget_unit!r})")
    budget_list = [int(b) for b in _floats(budgets, "budgets")]
    if not budget_list or min(budget_list) < 1:
        raise InputError(f"--budgets must all be >= 1 (got {budgets!r})")
    temps = _floats(temperature, "temperature")
    top_ps = _floats(top_p, "top-p")
    for t in temps:
        SamplingParams(temperature=t)  # a bad value is a one-line error before any model is loaded
    for p in top_ps:
        SamplingParams(top_p=p)
    items = load_task(task, limit=limit, seed=seed)
    setup = ScaleSetup(
        model=model,
        scorer=scorer,
        device=device,
        dtype=dtype,
        delimiter=delimiter,
        max_step_tokens=max_step_tokens,
        max_tokens=max_tokens,
        answer_format=answer_format,
        answer_regex=answer_regex,
        model_name=model_name,
        api_key=api_key,
        http_mode=http_mode,
        concurrency=concurrency,
    )
    _threads()
    _quiet_transformers()
    built = None if ray else setup.build()
    for t, p in [(t, p) for t in temps for p in top_ps]:
        executor = None
        if ray:
            from steerable.bench.distributed import RayExecutor

            executor = RayExecutor(setup, t, p, address=ray_address, workers=ray_workers)
        where = out
        if len(temps) > 1:
            where = where / f"temperature-{t:g}"
        if len(top_ps) > 1:
            where = where / f"top-p-{p:g}"
        try:
            summary = run_scale(
                items,
                method_list,
                budget_list,
                built.process_factory(t, p) if built else None,
                built.scorer if built else None,
                checker,
                where,
                seed=seed,
                progress=sys.stderr.isatty(),
                unit=budget_unit,
                tokens_per_sample=tokens_per_sample,
                executor=executor,
            )
        finally:
            if executor is not None:
                executor.close()
        if as_json:
            typer.echo(json.dumps({"temperature": t, "top_p": p, **summary}))
            continue
        from rich.console import Console
        from rich.table import Table

        unit_note = (
            f", budgets in tokens ({summary['tokens_per_sample']:g} per sample)" if budget_unit == "tokens" else ""
        )
        table = Table(title=f"{task}, temperature {t:g}, top-p {p:g}, {len(items)} items{unit_note} ({where})")
        columns = (
            "method",
            "budget",
            "accuracy",
            "generated_tokens",
            "forward_tokens",
            "scorer_calls",
            "scorer_tokens",
            "seconds",
            "errors",
        )
        for col in columns:
            table.add_column(col)
        for r in summary["rows"]:
            table.add_row(*(str(r[c]) for c in columns))
        Console().print(table)


@builtin_app.command("info")
def builtin_info() -> None:
    """Where the built-in model and PRM live and how they were trained."""
    from steerable.lm.builtin import BUILTIN_PRM_DIR, info, path

    typer.echo(
        json.dumps(
            {
                "model": str(path()),
                "training": info(),
                "prm": str(BUILTIN_PRM_DIR),
                "prm_training": json.loads((BUILTIN_PRM_DIR / "prm.json").read_text())
                if (BUILTIN_PRM_DIR / "prm.json").exists()
                else None,
            },
            indent=2,
        )
    )


def _run_train(cfg) -> None:
    from steerable.tasks.builtin.train import train

    if not cfg.threads:
        _threads()
    _quiet_transformers()
    rec = train(cfg)
    typer.echo(f"wrote {cfg.out}: {rec['steps']} steps in {rec['wall_seconds']}s, loss {rec['final_loss_ema']}")


def _run_train_prm(cfg) -> None:
    from steerable.tasks.builtin.train_prm import train_prm

    _threads()
    _quiet_transformers()
    typer.echo(json.dumps(train_prm(cfg), indent=2))


def _register_trainers() -> None:
    from steerable.config import config_command
    from steerable.tasks.builtin.train import TrainConfig
    from steerable.tasks.builtin.train_prm import PRMTrainConfig

    config_command(builtin_app, "train", TrainConfig, _run_train, "Train the built-in model from scratch.")
    config_command(
        builtin_app,
        "train-prm",
        PRMTrainConfig,
        _run_train_prm,
        "Train the built-in process reward model on the policy's own solutions.",
    )


_register_trainers()


@builtin_app.command("eval")
def builtin_eval(
    split: str = typer.Option("hard", help="easy, medium, hard or all."),
    n: int = typer.Option(200, help="Problems."),
    requests: int = typer.Option(0, help="Request prompts to sample (0: all)."),
    seed: int = typer.Option(0, help="Seed for problems and sampling."),
    model: str = typer.Option("builtin", help="Model directory, or 'builtin'."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    device: str = DEVICE,
    dtype: str = DTYPE,
) -> None:
    """Accuracy, by number of operations, refusal rates, style mix, solution length."""
    from steerable.tasks.builtin.arithmetic import split_range
    from steerable.tasks.builtin.evaluate import evaluate

    split_range(split)
    if n < 1:
        raise InputError(f"--n must be >= 1 (got {n})")
    gen = _generator(model, device, dtype)
    res = evaluate(gen, split=split, n=n, n_requests=requests, seed=seed, progress=sys.stderr.isatty())
    if as_json:
        typer.echo(json.dumps(res))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"built-in eval: {split} ({n} problems)")
    t.add_column("metric")
    t.add_column("value")
    for k, v in res.items():
        t.add_row(k, json.dumps(v))
    Console().print(t)


@app.command()
def demo(
    device: str = DEVICE,
    dtype: str = DTYPE,
    n: int = typer.Option(100, help="Problems per split for the accuracy table."),
) -> None:
    """A short tour of the built-in world: what the model does, and how well."""
    from steerable.demo import run_demo

    run_demo(_generator("builtin", device, dtype), n=n)


@app.command()
def serve(
    model: str = typer.Option("builtin", help="Model directory, or 'builtin'."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, help="Port."),
    steer: list[str] = typer.Option([], "--steer", help="NAME=PATH: a steering artifact requests can name."),
    prm: str | None = typer.Option(None, help="A PRM for scaling requests and /v1/score: builtin, or a directory."),
    api_key: str | None = typer.Option(
        None, envvar="STEERABLE_API_KEY", help="Require 'Authorization: Bearer KEY' on every route but /health."
    ),
    public_metrics: bool = typer.Option(False, help="With --api-key, leave /metrics open (for a scraper)."),
    served_model_name: str | None = typer.Option(None, help="The name clients use (default: --model)."),
    max_n: int = typer.Option(64, help="Most samples (n x prompts) per request."),
    max_tokens: int = typer.Option(4096, help="Most max_tokens a request may ask for."),
    max_request_tokens: int = typer.Option(
        65536, help="Most tokens one request may generate plus score: refused up front or stopped with an error."
    ),
    max_body_mb: float = typer.Option(1.0, help="Request bodies over this get 413 (checked while reading)."),
    device: str = DEVICE,
    dtype: str = DTYPE,
) -> None:
    """An OpenAI-compatible server: /v1/completions, /v1/chat/completions, /v1/score, /metrics."""
    from steerable.serve import build

    _threads()
    _quiet_transformers()
    if not 0 < port < 65536:
        raise InputError(f"--port must be in 1..65535 (got {port})")
    engine, api = build(
        model,
        steer,
        prm,
        device,
        dtype,
        model_name=served_model_name,
        api_key=api_key,
        public_metrics=public_metrics,
        max_n=max_n,
        max_tokens=max_tokens,
        max_request_tokens=max_request_tokens,
        max_body_bytes=int(max_body_mb * (1 << 20)),
    )
    import uvicorn

    typer.echo(f"serving {served_model_name or model} on http://{host}:{port}/v1", err=True)
    uvicorn.run(api, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)


@train_app.command("rl")
def train_rl_cmd(
    out: Path = typer.Option(..., help="Output directory: the trained model, metrics.jsonl, curves.png, checkpoints/."),
    model: str = typer.Option("builtin", help="Model directory, or 'builtin'."),
    task: str = typer.Option("builtin:medium", help="builtin:easy|medium|hard|all, or a JSONL file (prompt, answer)."),
    algo: str = typer.Option(
        "grpo",
        help="grpo, dr_grpo, dapo, clip_cov, kl_cov, mdpo, l_grpo, efficiency, aspo, ttrl, ettrl, icpo, brpo, "
        "trl_grpo.",
    ),
    reward: str | None = typer.Option(None, help="exact, format, prm, majority with weights: 'exact:1,format:0.2'."),
    template: str = typer.Option(
        "none", help="Prior prompt: none, reasoning, planning, code, knowledge, null_example."
    ),
    minutes: float | None = typer.Option(10.0, help="Wall-clock budget (the run stops after the step that spends it)."),
    steps: int | None = typer.Option(None, help="Step budget (with --minutes: whichever comes first)."),
    prompts_per_step: int = typer.Option(4, help="Prompts per step."),
    group: int = typer.Option(8, help="Rollouts per prompt (G)."),
    max_completion: int = typer.Option(160, help="Token cap per rollout."),
    temperature: float = typer.Option(1.0, help="Rollout temperature."),
    lr: float = typer.Option(1e-5, help="Learning rate (constant)."),
    beta: float = typer.Option(0.0, help="KL weight to the reference model."),
    minibatches: int | None = typer.Option(
        None, help="Optimiser steps per generated batch (default: 4 for clip_cov/kl_cov, else 1)."
    ),
    iterations: int | None = typer.Option(
        None, help="Passes over each generated batch, GRPO's mu (default: 4 for mdpo, else 1)."
    ),
    options: list[str] = typer.Option(
        [],
        "--set",
        help="An estimator/loss knob, NAME=VALUE (repeatable): kl_cov_ratio, clip_cov_ratio, eps_high, "
        "etmr_forks, etmr_branches, ettrl_adv_clip, length_weight, ... (steerable.rl.algos.RLConfig).",
    ),
    eval_every: int = typer.Option(25, help="Steps between held-in greedy evaluations (0: start and end only)."),
    eval_n: int = typer.Option(100, help="Held-in problems per evaluation."),
    save_every: int = typer.Option(50, help="Steps between checkpoints (rerun the command to resume)."),
    seed: int = typer.Option(0, help="Seed."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    device: str = DEVICE,
) -> None:
    """GRPO-family RL from verifiable rewards (TRL), with the papers' advantages and losses."""
    from steerable.rl.run import RLRunConfig, parse_options, train_rl

    _threads()
    _quiet_transformers()
    cfg = RLRunConfig(
        out=str(out),
        model=model,
        task=task,
        algo=algo,
        reward=reward,
        template=template,
        minutes=minutes,
        steps=steps,
        prompts_per_step=prompts_per_step,
        group=group,
        max_completion=max_completion,
        temperature=temperature,
        lr=lr,
        beta=beta,
        minibatches=minibatches,
        iterations=iterations,
        options=dict(parse_options(options)),
        eval_every=eval_every,
        eval_n=eval_n,
        save_every=save_every,
        seed=seed,
        device=device,
    )
    summary = train_rl(cfg, progress=sys.stderr.isatty())
    typer.echo(json.dumps(summary) if as_json else "\n".join(f"{k}: {v}" for k, v in summary.items()))


def main() -> None:
    try:
        app()
    except SteerableError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None
