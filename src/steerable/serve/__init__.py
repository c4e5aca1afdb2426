"""``steerable serve``: an OpenAI-compatible server with steering and scaling per request (extra ``[serve]``)."""

from __future__ import annotations

import os
from pathlib import Path

from steerable.errors import ConfigError, InputError


def build(
    model: str = "builtin",
    steer: list[str] | tuple[str, ...] = (),
    prm: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
    **config,
):
    """The engine and the FastAPI app, ready for uvicorn (``steer``: ``NAME=PATH`` strings)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("serving needs FastAPI and uvicorn: pip install 'steerable[serve]'") from None
    from steerable.lm.local import LocalGenerator
    from steerable.serve.app import ServeConfig, create_app
    from steerable.serve.engine import Engine
    from steerable.steer.artifact import load_steering

    gen = LocalGenerator.from_pretrained(model, device=device, dtype=dtype)
    arts = {}
    for spec in steer:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--steer takes NAME=PATH (got {spec!r})")
        if not Path(path).exists() and Path(path + ".safetensors").exists():
            path += ".safetensors"
        arts[name] = load_steering(path, gen.model, gen.tokenizer)
    scorers = {"oracle": None}
    if prm is not None:
        from steerable.search.registry import make_scorer

        scorers["prm"] = make_scorer(
            "builtin-prm" if prm == "builtin" else prm, device="cpu" if device == "auto" else device
        )
    from steerable.tasks.builtin.verifier import OraclePRM

    scorers["oracle"] = OraclePRM()
    if "prm" in scorers:  # the default scorer is the first: the PRM when there is one
        scorers = {"prm": scorers["prm"], "oracle": scorers["oracle"]}
    cfg = ServeConfig(model_name=config.pop("model_name", None) or model, scorers=scorers, **config)
    if cfg.api_key is None:
        cfg.api_key = os.environ.get("STEERABLE_API_KEY") or None
    engine = Engine(gen, arts)
    return engine, create_app(engine, cfg)
