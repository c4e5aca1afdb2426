"""Loading models and choosing devices and dtypes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from steerable.config import opt
from steerable.errors import ConfigError, ModelLoadError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICE_HELP = "cpu, cuda, cuda:N, mps or auto (cuda when there is one)."


@dataclass(frozen=True)
class DeviceConfig:
    """Where a model runs (the ``--device`` and ``--dtype`` of every command that loads one)."""

    device: str = opt("auto", DEVICE_HELP, min_len=1)
    dtype: Literal["float32", "bfloat16", "float16"] = opt("float32", "Weights' dtype.")


@dataclass(frozen=True)
class ModelConfig(DeviceConfig):
    """A model to load, and where."""

    model: str = opt("builtin", "Model directory, or 'builtin'.", min_len=1)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but CUDA is not available: use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda") and device != "mps":
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(name_or_path: str, device: str = "auto", dtype: str = "float32"):
    """``(model, tokenizer)`` for a causal LM directory (or ``builtin``), in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if name_or_path == "builtin":
        from steerable.lm.builtin import path

        name_or_path = str(path())
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    p = Path(name_or_path)
    if not p.exists():
        raise ModelLoadError(
            f"model path {name_or_path!r} does not exist: pass a local model directory or 'builtin' "
            "(models are not downloaded)"
        )
    try:
        config = AutoConfig.from_pretrained(p)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a model directory"
        raise ModelLoadError(f"{name_or_path!r} is not a transformers model directory ({type(e).__name__})") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(p, dtype=dt)
    except ValueError:
        raise ModelLoadError(
            f"{name_or_path!r} holds a {type(config).__name__} model, which is not a causal LM: "
            "pass a causal (decoder-only) language model"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(p)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(
            f"no usable tokenizer in {name_or_path!r} ({type(e).__name__}): save one next to the model"
        ) from None
    model.to(dev).eval()
    return model, tokenizer
