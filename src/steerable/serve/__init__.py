"""``steerable serve``: an OpenAI-compatible server with steering and scaling per request (extra ``[serve]``)."""

from __future__ import annotations

import os
from pathlib import Path

from steerable.errors import ConfigError, InputError

#: the engine's cross-request prefix cache (``--prefix-cache-mb``): room for ~1,000 tokens of a 7B model's KV
DEFAULT_PREFIX_CACHE_MB = 512.0


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
    from steerable.serve.app import ServeConfig, create_app

    if is_diffusion(model):
        return build_images(model, steer, prm, device, **config)
    from steerable.serve.episodes import is_control

    if is_control(model):
        return build_control(model, steer, prm, device, **config)
    from steerable.lm.local import LocalGenerator
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
    prefix_mb = config.pop("prefix_cache_mb", DEFAULT_PREFIX_CACHE_MB)
    cfg = ServeConfig(model_name=config.pop("model_name", None) or model, scorers=scorers, **config)
    if cfg.api_key is None:
        cfg.api_key = os.environ.get("STEERABLE_API_KEY") or None
    if cfg.tool_format == "auto":
        from steerable.serve.tools import detect

        cfg.tool_format = detect(model, gen.tokenizer)
    engine = Engine(gen, arts, prefix_cache_mb=prefix_mb)
    return engine, create_app(engine, cfg, builtin=model == "builtin")


def is_diffusion(model: str) -> bool:
    """``builtin:digits`` and ``builtin:mixture`` name the built-in diffusion worlds (``builtin`` is the LM)."""
    from steerable.diffusion.worlds import WORLDS

    return model.startswith("builtin:") and model.removeprefix("builtin:") in WORLDS


def build_images(model: str, steer, prm: str | None, device: str, **config):
    """The images server (``POST /v1/images/generations``) on a built-in diffusion world."""
    from steerable.serve.app import ServeConfig
    from steerable.serve.images import create_images_app

    if steer:
        raise InputError(f"--steer loads activation steering for language models; {model} is a diffusion model")
    if prm is not None:
        raise InputError(f"--prm scores language-model steps; {model} is steered by its own reward: leave --prm out")
    if device not in ("auto", "cpu"):
        raise ConfigError("the built-in diffusion worlds run on the CPU (185k parameters): leave --device out")
    try:
        from steerable.diffusion.worlds import load_world

        world = load_world(model)
    except ImportError:
        raise ConfigError(
            "serving a diffusion model needs diffusers and scikit-learn: pip install 'steerable[diffusion]'"
        ) from None
    config.pop("prefix_cache_mb", None)  # a diffusion run has no token prefix to reuse
    cfg = ServeConfig(model_name=config.pop("model_name", None) or model, **config)
    if cfg.api_key is None:
        cfg.api_key = os.environ.get("STEERABLE_API_KEY") or None
    return create_images_app(world, cfg)


def build_control(model: str, steer, prm: str | None, device: str, **config):
    """The control server (``POST /v1/control/episodes``) on a built-in control world (builtin:pointnav, stlnav)."""
    from steerable.serve.app import ServeConfig
    from steerable.serve.control import create_control_app

    if steer:
        raise InputError(f"--steer loads activation steering for language models; {model} is a control world")
    if prm is not None:
        raise InputError(f"--prm scores language-model steps; {model} is steered by its own critic: leave --prm out")
    if device not in ("auto", "cpu"):
        raise ConfigError("the built-in control worlds run on the CPU (a small diffusion policy): leave --device out")
    config.pop("prefix_cache_mb", None)  # an episode has no token prefix to reuse
    cfg = ServeConfig(model_name=config.pop("model_name", None) or model, **config)
    if cfg.api_key is None:
        cfg.api_key = os.environ.get("STEERABLE_API_KEY") or None
    return create_control_app(model, cfg)
