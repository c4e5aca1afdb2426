"""``steerable agent ...``: language models acting in environments: run, scale, train the built-in agent model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from steerable.agents.config import AgentModel, AgentRunConfig, AgentScaleConfig, AgentTasks
from steerable.agents.ctrls_train import CtrlsTrainConfig
from steerable.agents.value import ValueTrainConfig
from steerable.cli.app import agent_app
from steerable.cli.common import Printing, output_dir, quiet_transformers, threads
from steerable.cli.flags import command
from steerable.tasks.agent.train import AgentTrainConfig


def _help() -> str:
    from steerable.agents.registry import METHODS

    return (
        "Success against compute for agent methods on an environment's tasks. What a budget N counts:\n\n"
        + METHODS.budget_help()
    )


def _setup(model: AgentModel, tasks: AgentTasks, seed: int):
    from steerable.agents.process import AgentProcess
    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.tasks.agent.data import tasks_of

    items = tasks_of(tasks.env, tasks.split, tasks.task, tasks.limit, seed)
    if tasks.tools == "off":
        from steerable.tasks.agent.envs import make_env

        for t in items[:1]:
            make_env(str(t.get("env"))).reset(t, tools=False)  # one line if the environment has no text-only form
    threads()
    quiet_transformers()
    gen = LocalGenerator.from_pretrained(model.model, device=model.device, chat_template="never")

    def make_process(greedy: bool) -> AgentProcess:
        params = (
            SamplingParams(temperature=0.0)
            if greedy
            else SamplingParams(temperature=model.temperature, top_p=model.top_p)
        )
        return AgentProcess(gen, params, max_steps=model.max_turns, fork=model.fork)

    return items, make_process, gen


@command(agent_app, "scale", help=_help())
def agent_scale(run: AgentScaleConfig, tasks: AgentTasks, model: AgentModel, printing: Printing) -> None:
    from steerable.agents.registry import make_method, make_value
    from steerable.bench.agent_scale import run_agent_scale

    for m in run.methods:
        make_method(m)  # a bad name or option is one line before the model loads
    items, make_process, gen = _setup(model, tasks, run.seed)
    value = make_value(run.value, gen, model.model)
    if run.out is not None:
        output_dir(run.out)
    summary = run_agent_scale(
        items, run.methods, run.budgets, make_process, value, run.out, seed=run.seed, tools=tasks.tools == "on",
        progress=not sys.stderr.isatty(),
    )  # fmt: skip
    if printing.json:
        typer.echo(json.dumps(summary))
        return
    for r in summary["rows"]:
        typer.echo(
            f"{r['method']:>8} {r['budget']:>4}  success {r['success']:.3f} ± {r['success_se']:.3f} "
            f"({r['items']} tasks)  gen {r['generated_tokens']:.0f}  env steps {r['env_steps']:.1f}  "
            f"real {r['real_steps']:.1f}  tools {r['tool_calls']:.1f}  {r['seconds']:.2f}s"
        )


@command(agent_app, "run")
def agent_run(run: AgentRunConfig, tasks: AgentTasks, model: AgentModel, printing: Printing) -> None:
    """Run a method on tasks and print each transcript with its verdict."""
    from steerable.agents.process import episode
    from steerable.agents.registry import is_greedy, make_method, make_value
    from steerable.streams import item_seed
    from steerable.tasks.agent.envs import replay

    name, strategy = make_method(run.method)
    items, make_process, gen = _setup(model, tasks, run.seed)
    val = None if is_greedy(name) else make_value(run.value, gen, model.model)
    proc = make_process(is_greedy(name))
    rows = []
    for i, task in enumerate(items):
        cond = episode(task, tools=tasks.tools == "on")
        res = strategy.run(proc, val, run.budget, cond, seed=item_seed(run.seed, i))
        final = replay(cond.env, res.text or "")
        rows.append({"task": task, "transcript": cond.prompt + (res.text or ""), "success": final.solved,
                     "real_steps": final.steps, "env_steps": res.cost.env_steps,
                     "generated_tokens": res.cost.generated_tokens})  # fmt: skip
        if not printing.json:
            typer.echo(cond.prompt + (res.text or "") + f"\n-> {'solved' if final.solved else 'not solved'} "
                       f"in {final.steps} real steps ({res.cost.env_steps} in all)\n")  # fmt: skip
    if printing.json:
        typer.echo(json.dumps({"rows": rows}))


@command(agent_app, "train")
def agent_train(cfg: AgentTrainConfig) -> None:
    """Train an agent model (from scratch, or from --init), then record its greedy success per environment and split."""
    from steerable.bench.agent_scale import greedy_success
    from steerable.lm.local import LocalGenerator
    from steerable.tasks.agent.train import parse_mix, train

    if not cfg.threads:
        threads()
    quiet_transformers()
    model, tok, record = train(cfg)
    kinds = {k for k, _ in parse_mix(cfg.mix)}  # success is measured in the environments the mix trains
    envs = [e for e in ("calculator", "lookup", "maze", "chains") if e in kinds or (e == "chains" and kinds &
            {"workspace", "iad"})]  # fmt: skip
    record["greedy_success"] = greedy_success(LocalGenerator(model, tok, chat_template="never"), envs=envs)
    (Path(cfg.out) / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    typer.echo(f"wrote {cfg.out}: {record['steps']} steps in {record['wall_seconds']}s; "
               f"greedy success {json.dumps(record['greedy_success'])}")  # fmt: skip


@command(agent_app, "train-value")
def agent_train_value(cfg: ValueTrainConfig) -> None:
    """Fit the value head of agent search on the model's own episodes (Monte-Carlo success of each state)."""
    from steerable.agents.value import train_value
    from steerable.lm.loading import model_fingerprint
    from steerable.lm.local import LocalGenerator

    threads()
    quiet_transformers()
    output_dir(Path(cfg.out))
    gen = LocalGenerator.from_pretrained(cfg.model, device="cpu", chat_template="never")
    typer.echo(json.dumps(train_value(cfg, gen, model_fingerprint(cfg.model)), indent=2))


@command(agent_app, "train-ctrls")
def agent_train_ctrls(cfg: CtrlsTrainConfig) -> None:
    """CTRLS: latent actions (k-means of step hidden states) and a policy over them, trained on-policy on the
    model's own episodes of training tasks (ε-greedy, entropy bonus, the step verifier as reward)."""
    import torch

    from steerable.agents.ctrls_train import train_ctrls
    from steerable.lm.loading import model_fingerprint
    from steerable.lm.local import LocalGenerator

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    else:
        threads()
    quiet_transformers()
    output_dir(Path(cfg.out))
    gen = LocalGenerator.from_pretrained(cfg.model, device="cpu", chat_template="never")
    typer.echo(json.dumps(train_ctrls(cfg, gen, model_fingerprint(cfg.model)), indent=2))
