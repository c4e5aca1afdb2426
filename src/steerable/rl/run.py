"""``steerable train rl``: a time- or step-budgeted RL run on TRL, with eval, checkpoints, resume and curves.

The output directory holds the trained model (a normal model directory every
command accepts), ``metrics.jsonl`` (one line per logged step: reward,
accuracy, entropy, mean length, clipped fraction, covariance statistics, and
the held-in greedy accuracy when measured), ``curves.png``, ``run.json`` (the
command, settings and machine: :func:`~steerable.provenance.provenance`) and
``checkpoints/`` (TRL's, for resume: rerun the same command).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from steerable.config import check, from_mapping, opt, parse_pairs
from steerable.errors import ConfigError, SteerableError
from steerable.lm.loading import DEVICE_HELP
from steerable.provenance import provenance
from steerable.rl.algos import ALGOS, Algo, RLConfig
from steerable.rl.rewards import TEMPLATES
from steerable.rl.session import (
    Clock,
    builtin_prm,
    builtin_split,
    finish,
    greedy_accuracy,
    prompts,
)
from steerable.streams import derive_seed

#: ``--algo`` takes a name of the registry, ``--template`` a prior prompt: the flags list what the code has.
AlgoName = Literal[tuple(ALGOS)]  # type: ignore[valid-type]
TemplateName = Literal[tuple(TEMPLATES)]  # type: ignore[valid-type]


@dataclass(frozen=True)
class RLRunConfig:
    """A ``steerable train rl`` run (the command's flags are these fields)."""

    out: str = opt(..., "Output directory: the trained model, metrics.jsonl, curves.png, checkpoints/.", min_len=1)
    model: str = opt("builtin", "Model directory, or 'builtin'.", min_len=1)
    task: str = opt(
        "builtin:medium",
        "builtin:easy|medium|hard|all (builtin:SPLIT:test: its evaluation problems, for ttrl/ettrl), "
        "builtin:agent:ENV:SPLIT (agent episodes: calculator|lookup|maze|chains, easy|hard; with --model "
        "builtin:agent), or a JSONL file (prompt, answer).",
        min_len=1,
    )
    algo: AlgoName = opt("grpo", "The estimator and loss.")
    reward: str | None = opt(
        None, "exact, format, prm, majority with weights: 'exact:1,format:0.2' (default: the algorithm's).", min_len=1
    )
    template: TemplateName = opt("none", "Prior prompt.")
    minutes: float | None = opt(10.0, "Wall-clock budget (the run stops after the step that spends it).", gt=0)
    steps: int | None = opt(None, "Step budget (with --minutes: whichever comes first).", ge=1)
    prompts_per_step: int = opt(4, "Prompts per step.", ge=1, le=4096)
    group: int = opt(8, "Rollouts per prompt (G).", ge=2, le=1024)
    max_completion: int = opt(160, "Token cap per rollout.", ge=1, le=100_000)
    temperature: float = opt(1.0, "Rollout temperature.", gt=0, le=100)
    # Adam on the 1.8M built-in model: 1e-4 drifts (92% -> 76% held-in in 75 steps)
    lr: float = opt(1e-5, "Learning rate (constant).", gt=0, le=1)
    # KL to the reference model (0: none, as DAPO and Dr.GRPO)
    beta: float = opt(0.0, "KL weight to the reference model.", ge=0)
    minibatches: int | None = opt(
        None, "Optimiser steps per generated batch (default: the algorithm's, 4 for clip_cov/kl_cov).", ge=1, le=1024
    )
    iterations: int | None = opt(
        None, "Passes over each generated batch, GRPO's mu (default: the algorithm's, 4 for mdpo).", ge=1, le=1024
    )
    # overrides of the estimators' and losses' knobs (steerable.rl.algos.RLConfig), e.g. {"kl_cov_ratio": 0.02}
    options: dict = opt(
        ...,
        "An estimator/loss knob, NAME=VALUE (repeatable): kl_cov_ratio, clip_cov_ratio, eps_high, etmr_forks, "
        "etmr_branches, ettrl_adv_clip, length_weight, ... (steerable.rl.algos.RLConfig).",
        flag="--set",
        factory=dict,
    )
    eval_every: int = opt(25, "Steps between held-in greedy evaluations (0: start and end only).", ge=0)
    eval_n: int = opt(100, "Held-in problems per evaluation.", ge=1, le=100_000)
    save_every: int = opt(50, "Steps between checkpoints (rerun the command to resume).", ge=1)
    seed: int = opt(0, "Seed.", ge=0, lt=2**32)
    device: str = opt("auto", DEVICE_HELP, min_len=1)

    def __post_init__(self) -> None:
        check(self)
        if self.minutes is None and self.steps is None:
            raise ConfigError("give --minutes or --steps")


def train_rl(cfg: RLRunConfig, progress: bool = True) -> dict:
    """A budgeted RL run into ``cfg.out``: TRL's trainer with the algorithm's advantages and loss, held-in
    evaluations, and a resume from the newest checkpoint when there is one; returns the summary."""
    plan = _plan(cfg)  # every setting checked before anything loads
    if plan.algo.loop == "tppo":  # windows and a critic: its own loop, not TRL's trainer
        from steerable.rl.tppo import train_tppo

        return train_tppo(cfg, plan, progress)
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback

    from steerable.lm.loading import load_model, resolve_device
    from steerable.rl import agent
    from steerable.rl.rewards import parse_rewards
    from steerable.rl.trainer import RunLog, SteerableGRPOTrainer
    from steerable.tasks.answers import make_checker

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps(provenance(cfg, "train rl"), indent=2) + "\n")
    task = agent.parse_task(cfg.task)
    extract = make_checker("builtin" if cfg.task.startswith("builtin:") else "boxed").extract
    if task is not None:
        from steerable.agents.process import answer_of as extract
    device = resolve_device(cfg.device)
    model, tok = load_model(cfg.model, device=str(device))
    rows, held_in = prompts(cfg, plan.algo, tok)
    funcs, weights = parse_rewards(cfg.reward or plan.algo.reward, extract, builtin_prm, agent=task is not None)
    if any(f.__name__ == "exact" for f in funcs) and all(r["answer"] is None for r in rows):
        raise ConfigError("the exact reward needs answers: use --algo ttrl (majority vote) for unlabelled prompts")
    metrics, clock = out / "metrics.jsonl", Clock(out / "elapsed.json")
    budget = None if cfg.minutes is None else cfg.minutes * 60

    def spent() -> float:
        """The share of the run's budget spent: steps or time, whichever is further along."""
        done = trainer.state.global_step / cfg.steps if cfg.steps else 0.0
        return max(done, clock.seconds() / budget) if budget else done

    def held_in_accuracy() -> float:
        if task is not None:
            return agent.agent_accuracy(model, tok, held_in, task, cfg.max_completion)
        return greedy_accuracy(model, tok, held_in, extract, cfg.max_completion)

    trainer = SteerableGRPOTrainer(
        model=model,
        processing_class=tok,
        reward_funcs=funcs,
        args=_grpo_args(cfg, plan, out, weights, device),
        train_dataset=Dataset.from_list(rows),
        algo=plan.algo,
        rl_config=plan.rl,
        extract=extract,
        seed=cfg.seed,
        progress=spent,
        **_rollouts(cfg, plan),
    )
    bar, show = _bar(cfg.algo, progress)
    trainer.remove_callback(PrinterCallback)  # our bar and metrics.jsonl report progress; keep stdout for results
    trainer.add_callback(RunLog(metrics, clock, budget, cfg.eval_every, held_in_accuracy, show))
    resumed = resume_point(out, metrics, clock.before)
    if resumed is not None and budget is not None and clock.before >= budget:  # spent: evaluate it, no step
        model = type(model).from_pretrained(str(out / "checkpoints" / resumed["checkpoint"])).to(device)
    elif budget is None or clock.before < budget:
        with bar:
            _session(trainer, resumed is not None, metrics, clock, held_in_accuracy)
    clock.save()
    final = held_in_accuracy()
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return finish(cfg, out, trainer.state.global_step, clock, final, resumed)


@dataclass(frozen=True)
class Plan:
    """What a run's settings resolve to: the algorithm, its knobs, and the optimiser steps per batch."""

    algo: Algo
    rl: RLConfig
    minibatches: int  # optimiser steps per generated batch
    iterations: int  # passes over each generated batch (GRPO's mu)


def _plan(cfg: RLRunConfig) -> Plan:
    """The run's settings resolved and checked, each error one line, before any model, data or TRL loads."""
    try:
        import datasets  # noqa: F401
        import trl  # noqa: F401
    except ImportError:
        raise ConfigError("RL needs TRL: pip install 'steerable[rl]'") from None
    import warnings

    from steerable.rl.agent import parse_task
    from steerable.rl.algos import ALGOS, check_inputs, rl_config_for

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renames, raised inside TRL
    if cfg.algo not in ALGOS:
        raise ConfigError(f"unknown algorithm {cfg.algo!r}: use one of {', '.join(ALGOS)}")
    agent_task = parse_task(cfg.task)
    if agent_task is not None:
        if ALGOS[cfg.algo].rollout is not None:
            raise ConfigError(f"{cfg.algo} samples its own rollouts; agent tasks' rollouts are episodes: pick another")
        if cfg.template != "none":
            raise ConfigError("agent tasks keep their environment's prompt: drop --template")
    elif "round_ids" in _declared(ALGOS[cfg.algo]):
        raise ConfigError(
            f"{cfg.algo} trains each round of an agent episode as a sample: use --task builtin:agent:ENV:SPLIT "
            f"(got {cfg.task!r})"
        )
    elif cfg.task.startswith("builtin:") and builtin_split(cfg.task)[1] and ALGOS[cfg.algo].reward != "majority":
        raise ConfigError(
            f"{cfg.task} holds the evaluation problems: only label-free test-time RL (ttrl, ettrl) may train on "
            f"them; use builtin:{builtin_split(cfg.task)[0]} for {cfg.algo}"
        )
    if cfg.minutes is None and cfg.steps is None:
        raise ConfigError("give --minutes or --steps")
    if cfg.group < 2:
        raise ConfigError(f"--group must be >= 2 (got {cfg.group}): advantages compare rollouts of a prompt")
    if cfg.prompts_per_step < 1 or cfg.max_completion < 1 or cfg.lr <= 0:
        raise ConfigError("--prompts-per-step, --max-completion and --lr must be positive")
    algo = ALGOS[cfg.algo]
    minibatches = algo.minibatches if cfg.minibatches is None else cfg.minibatches
    options = parse_options(cfg.options)
    if agent_task is not None:  # ASPO's tool call: the environment's action line, unless set
        options.setdefault("aspo_marker", agent_task.marker)
    rc = rl_config_for(algo, max_completion_length=cfg.max_completion, **options)
    check_inputs(algo)
    if minibatches < 1:
        raise ConfigError(f"--minibatches must be >= 1 (got {minibatches})")
    iterations = algo.iterations if cfg.iterations is None else cfg.iterations
    if iterations < 1:
        raise ConfigError(f"--iterations must be >= 1 (got {iterations})")
    if rc.dynamic_sampling and cfg.group % minibatches:  # dropped groups must leave whole mini-batches
        raise ConfigError(
            f"dynamic sampling with --minibatches {minibatches} needs --group a multiple of it (got {cfg.group})"
        )
    if algo.rollout == "icpo" and not cfg.task.startswith("builtin:"):
        raise ConfigError("icpo needs demonstrations: only built-in tasks have them for now")
    if algo.loop == "tppo":
        _check_tppo(cfg, rc, agent_task is not None, minibatches, iterations)
    return Plan(algo, rc, minibatches, iterations)


def _check_tppo(cfg: RLRunConfig, rc: RLConfig, agent_task: bool, minibatches: int, iterations: int) -> None:
    """What T-PPO's windowed loop does not do, each a one-line error."""
    if agent_task:
        raise ConfigError("tppo trains on built-in or JSONL tasks, not agent episodes")
    if "majority" in (cfg.reward or ""):
        raise ConfigError("tppo has no groups to vote in: use the exact, format or prm reward")
    if cfg.beta:
        raise ConfigError("tppo has no reference model: drop --beta")
    if minibatches != 1 or iterations != 1:
        raise ConfigError("tppo takes one optimiser step per window: drop --minibatches and --iterations")
    if rc.dynamic_sampling:
        raise ConfigError("tppo refills ended slots itself: drop --set dynamic_sampling=true")


def _declared(algo: Algo) -> set[str]:
    """The inputs an algorithm's estimator and loss declare."""
    from steerable.rl.algos import ADVANTAGES, POLICY_LOSSES, declared_inputs

    fns = [ADVANTAGES.get(algo.advantage), POLICY_LOSSES.get(algo.loss)]
    return {k for fn in fns if fn is not None for k in declared_inputs(fn)}


def _grpo_args(cfg: RLRunConfig, plan: Plan, out: Path, weights: list[float], device):
    """TRL's settings: the batch shape, the algorithm's clip range, checkpoints in ``out/checkpoints``."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=cfg.prompts_per_step * cfg.group,
        num_generations=cfg.group,
        max_completion_length=cfg.max_completion,
        num_iterations=plan.iterations,
        steps_per_generation=plan.minibatches,
        learning_rate=cfg.lr,
        beta=cfg.beta,
        temperature=cfg.temperature,
        epsilon=plan.rl.eps_low,
        epsilon_high=plan.rl.eps_high,
        reward_weights=weights,
        max_steps=cfg.steps or 10**6,
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_every,
        save_total_limit=2,
        report_to="none",
        use_cpu=device.type == "cpu",
        bf16=False,
        disable_tqdm=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        lr_scheduler_type="constant",
    )


def _rollouts(cfg: RLRunConfig, plan: Plan) -> dict:
    """TRL's ``rollout_func`` where the algorithm samples its own way (ICPO's demo-guided rows, ETMR's trees)
    or the task is an agent's (episodes with the environment mask)."""
    import os

    from steerable.rl.agent import agent_rollout, parse_task
    from steerable.rl.rollouts import etmr_rollout, icpo_rollout

    task = parse_task(cfg.task)
    if plan.algo.rollout is None and task is None:
        return {}
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental in TRL
    if task is not None:
        return {"rollout_func": agent_rollout(task, cfg.seed)}
    if plan.algo.rollout == "icpo":
        return {"rollout_func": icpo_rollout(_demo(cfg.task, cfg.seed))}
    return {"rollout_func": etmr_rollout(plan.rl.etmr_forks, plan.rl.etmr_branches, group=cfg.group)}


def _bar(algo: str, progress: bool):
    """A rich bar of steps and ``show(step, info)``, which moves it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]rl {task.fields[algo]}"),
        BarColumn(),
        TextColumn("step {task.completed:.0f} {task.fields[info]}"),
        TimeElapsedColumn(),
        disable=not progress,
    )
    task = bar.add_task("rl", total=None, algo=algo, info="")
    return bar, lambda step, info: bar.update(task, completed=step, info=info)


def _session(trainer, resume: bool, metrics: Path, clock: Clock, held_in_accuracy: Callable[[], float]) -> None:
    """Train: from the newest checkpoint, or from the start after a row of the base model's held-in accuracy.
    Ctrl-C saves a checkpoint to resume from, then stops."""
    if not resume:
        with metrics.open("a") as f:
            f.write(json.dumps({"step": 0, "seconds": 0.0, "held_in_accuracy": held_in_accuracy()}) + "\n")
    try:
        trainer.train(resume_from_checkpoint=True if resume else None)
    except KeyboardInterrupt:  # keep the work: a checkpoint to resume from, then stop
        clock.save()
        trainer._save_checkpoint(trainer.model, trial=None)
        raise SteerableError(
            f"interrupted at step {trainer.state.global_step}: saved a checkpoint in {trainer.args.output_dir}; "
            "rerun the same command to resume"
        ) from None


def resume_point(out: Path, metrics_path: Path, spent: float) -> dict | None:
    """Where a rerun resumes: the newest checkpoint, with ``metrics.jsonl`` cut back to its step; None: from scratch.

    A kill after a checkpoint leaves rows of steps the resumed run will redo
    (and a finished run its ``final`` row): they are dropped so that every step
    appears once. A run killed before its first checkpoint left rows nothing
    can resume from: they go, and the run starts over. What was resumed is
    said on stderr and returned (it goes into the summary).
    """
    import sys

    steps = {
        int(p.name.rsplit("-", 1)[1]): p for p in (out / "checkpoints").glob("checkpoint-*") if p.name[11:].isdigit()
    }
    rows = [x for x in metrics_path.read_text().splitlines() if x.strip()] if metrics_path.exists() else []
    if not steps:
        if rows:
            print(
                f"{out}: no checkpoint to resume from; starting over (dropped {len(rows)} metrics rows)",
                file=sys.stderr,
            )
            metrics_path.unlink()
        return None
    step = max(steps)
    kept = []
    for line in rows:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if row.get("step", 0) <= step and not row.get("final"):
            kept.append(line)
    metrics_path.write_text("".join(x + "\n" for x in kept))
    info = {
        "checkpoint": steps[step].name,
        "step": step,
        "seconds": round(spent, 1),
        "dropped_rows": len(rows) - len(kept),
    }
    print(
        f"{out}: resuming from {info['checkpoint']} (step {step}, {spent:.0f} s spent); dropped "
        f"{info['dropped_rows']} metrics rows past it",
        file=sys.stderr,
    )
    return info


def parse_options(options: Mapping | list[str]) -> dict:
    """RLConfig overrides from ``{"name": value}`` or the CLI's ``["name=value", ...]`` (read by
    :func:`~steerable.config.parse_pairs`), each checked against its RLConfig field and given the field's type."""
    from steerable.rl.algos import RLConfig

    if not isinstance(options, Mapping):
        options = parse_pairs(options, "--set", "write NAME=VALUE, e.g. --set kl_cov_ratio=0.02")
    checked = from_mapping(RLConfig, options)
    return {name: getattr(checked, name) for name in options}


def _demo(task: str, seed: int) -> str:
    """A one-shot demonstration for ICPO: one solved training problem in the concise style."""
    from steerable.tasks.builtin import arithmetic as A

    lo, hi = A.split_range(builtin_split(task)[0])
    p = A.train_problem(random.Random(derive_seed(seed, "icpo-demo")), lo, hi)
    return p.prompt + p.solution("concise") + "\n"
