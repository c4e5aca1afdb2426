"""``steerable control ...``: the built-in control world's data, critics, policies and evaluation."""

from __future__ import annotations

import json

import typer

from steerable.errors import InputError

control_app = typer.Typer(no_args_is_help=True, help="Control policies: data, train-q, train-policy, eval, ...")


def _run_data(cfg) -> None:
    from steerable.control.data import make_dataset

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
    from steerable.control.data import Dataset
    from steerable.control.envs import make_env
    from steerable.control.normalize import ActionScale
    from steerable.control.q import train_q

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
    from steerable.control.data import Dataset
    from steerable.control.envs import make_env
    from steerable.control.normalize import ActionScale
    from steerable.control.policy import train_policy

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


def _register() -> None:
    from steerable.config import config_command

    try:
        from steerable.control.data import DataConfig
        from steerable.control.policy import PolicyConfig
        from steerable.control.q import TrainQConfig
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


_register()
