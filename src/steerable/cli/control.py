"""``steerable control ...``: the built-in control world's data, critics, policies and evaluation."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import typer

from steerable.cli.app import control_app
from steerable.cli.common import Printing
from steerable.config import opt
from steerable.errors import InputError


def _run_data(cfg) -> None:
    from steerable.control.worlds.data import make_dataset

    data = make_dataset(cfg)
    data.save(cfg.out)
    kinds = {str(k): int((data.kind == k).sum()) for k in sorted(set(data.kind.tolist()))}
    typer.echo(
        json.dumps(
            {
                "out": cfg.out,
                "episodes": data.episodes,
                "transitions": len(data),
                "success": round(float(data.success.mean()), 4),
                "kinds": kinds,
            }
        )
    )


def _run_train_q(cfg) -> None:
    from steerable.control.policies.normalize import ActionScale
    from steerable.control.training.iql import train_q
    from steerable.control.worlds.data import Dataset
    from steerable.control.worlds.envs import make_env

    data = Dataset.load(cfg.data)
    env = make_env(cfg.env)
    if env.observation_space.shape[0] != data.obs.shape[1]:
        raise InputError(
            f"{cfg.data} has {data.obs.shape[1]}-dim observations but {cfg.env} has "
            f"{env.observation_space.shape[0]}: pass the env the data came from with --env"
        )
    critic = train_q(cfg, data, ActionScale.from_space(env.action_space))
    critic.save(cfg.out, critic.record)
    typer.echo(json.dumps({"out": cfg.out, **{k: critic.record[k] for k in ("scores", "wall_seconds")}}))


def _run_train_policy(cfg) -> None:
    from steerable.control.policies.normalize import ActionScale
    from steerable.control.training.bc import train_policy
    from steerable.control.worlds.data import Dataset
    from steerable.control.worlds.envs import make_env

    data = Dataset.load(cfg.data)
    env = make_env(cfg.env)
    if env.observation_space.shape[0] != data.obs.shape[1]:
        raise InputError(
            f"{cfg.data} has {data.obs.shape[1]}-dim observations but {cfg.env} has "
            f"{env.observation_space.shape[0]}: pass the env the data came from with --env"
        )
    policy, record = train_policy(cfg, data, ActionScale.from_space(env.action_space))
    policy.save(cfg.out, record)
    typer.echo(json.dumps({"out": cfg.out, **{k: record[k] for k in ("steps", "wall_seconds", "final_loss_ema")}}))


def _run_tgpo(cfg) -> None:
    from steerable.control.training.tgpo import train_tgpo

    typer.echo(json.dumps(train_tgpo(cfg)))


def _run_gorl(cfg) -> None:
    from steerable.control.training.gorl import train_gorl

    typer.echo(json.dumps(train_gorl(cfg)))


def _run_pgd(cfg) -> None:
    from steerable.control.training.pgd_run import run_pgd

    result = run_pgd(cfg)
    keep = ("success", "success_se", "return", "outcomes", "final_on_policy_gap")
    typer.echo(json.dumps({arm: {k: r[k] for k in keep if k in r} for arm, r in result["arms"].items()}))


def _run_dsrl(cfg) -> None:
    from steerable.control.training.dsrl import train_dsrl
    from steerable.control.training.dsrl_na import train_dsrl_na

    record = (train_dsrl_na if cfg.variant == "na" else train_dsrl)(cfg)
    typer.echo(json.dumps({k: record[k] for k in ("env_steps", "nfe", "wall_seconds", "curve")}))


@dataclass(frozen=True)
class EvalPlot:
    plot: str | None = opt(None, "Draw the rollouts on the 2-D map to this PNG.", min_len=1)


def _run_eval(cfg, printing: Printing, drawing: EvalPlot) -> None:
    import torch

    from steerable.control.evaluate import evaluate, summary
    from steerable.control.evaluate import plot as draw
    from steerable.control.registry import load_policy, make_controller
    from steerable.control.worlds.envs import make_env

    torch.set_num_threads(cfg.threads)
    env = make_env(cfg.env)
    policy = load_policy(cfg)
    controller = make_controller(cfg, policy)
    run = {k: v for k, v in asdict(cfg).items() if k not in ("episodes", "resume", "threads")}
    plot = drawing.plot
    eps = evaluate(env, controller, cfg.episodes, cfg.seed, cfg.resume or None, keep_path=plot is not None, run=run)
    row = summary(cfg.method, cfg.budget, eps)
    if plot:
        if not hasattr(env, "config"):
            raise InputError(f"--plot draws the 2-D map of the built-in envs, not {cfg.env}")
        draw(env, eps, plot, f"{cfg.method} (budget {cfg.budget}): success {row['success']:.2f}")
    if printing.json:
        typer.echo(json.dumps(row))
    else:
        typer.echo(
            f"{row['method']} budget {row['budget']}: success {row['success']:.3f} (+-{row['success_se']:.3f}) "
            f"return {row['return']:.3f} over {row['episodes']} episodes; NFE/step {row['nfe_per_step']:.2f}, "
            f"s/step {row['seconds_per_step']:.5f}; outcomes {row['outcomes']}"
        )


def _run_train_pg(cfg, printing: Printing) -> None:
    from steerable.control.training.npg import train_pg

    r = train_pg(cfg)
    keep = ("trajectories", "iterations", "diverged", "curve", "metrics")
    row = {"env": cfg.env, "method": cfg.method, "final_return": r["curve"][-1][1], **{k: r[k] for k in keep}}
    if printing.json:
        typer.echo(json.dumps(row))
    else:
        curve = ", ".join(f"{n}: {ret:.1f}" for n, ret in r["curve"])
        typer.echo(
            f"{cfg.method} on {cfg.env}, return by trajectories sampled: {curve}" + (" (diverged)" * r["diverged"])
        )


def _register() -> None:
    from steerable.cli.flags import command, config_command

    try:
        from steerable.control.registry import EvalConfig, options_help
        from steerable.control.training.bc import PolicyConfig
        from steerable.control.training.dsrl import DSRLConfig
        from steerable.control.training.gorl import GoRLConfig
        from steerable.control.training.iql import TrainQConfig
        from steerable.control.training.npg import PGConfig
        from steerable.control.training.pgd_run import PGDConfig
        from steerable.control.training.tgpo import TGPOConfig
        from steerable.control.worlds.data import DataConfig
    except ImportError as e:  # the [control] extra is optional
        absent = e.name

        @control_app.callback(invoke_without_command=True)
        def missing() -> None:
            raise InputError(
                f"the control commands need the [control] extra ({absent} is missing): pip install 'steerable[control]'"
            )

        return
    config_command(control_app, "data", DataConfig, _run_data, "Record the scripted planner's dataset (.npz).")
    config_command(control_app, "train-policy", PolicyConfig, _run_train_policy, "Train a diffusion policy by BC.")
    config_command(control_app, "train-q", TrainQConfig, _run_train_q, "Train an IQL critic offline (for V-GPS).")
    config_command(control_app, "dsrl", DSRLConfig, _run_dsrl, "DSRL: SAC over the frozen policy's initial noise.")
    config_command(
        control_app, "gorl", GoRLConfig, _run_gorl, "GoRL: latent SAC and decoder refits on its rollouts, by stages."
    )
    config_command(
        control_app, "pgd", PGDConfig, _run_pgd, "Policy-guided diffusion: TD3+BC on real vs real + synthetic data."
    )
    config_command(
        control_app, "tgpo", TGPOConfig, _run_tgpo, "TGPO-style: a time-conditioned policy and its allocation critic."
    )

    @command(control_app, "train-pg", help="N-PG-IGT, (N)-HARPG, STORM-PG or REINFORCE, one trajectory per step.",
             classes=(PGConfig,))  # fmt: skip
    def control_train_pg(cfg: PGConfig, printing: Printing) -> None:
        _run_train_pg(cfg, printing)

    doc = "Success, return, NFE and seconds per control step of a method on seeded episodes.\n\n" + options_help()

    @command(control_app, "eval", help=doc, classes=(EvalConfig,))
    def control_eval(cfg: EvalConfig, printing: Printing, drawing: EvalPlot) -> None:
        _run_eval(cfg, printing, drawing)


_register()
