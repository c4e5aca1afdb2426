"""Loading models and choosing devices and dtypes."""

from __future__ import annotations

import hashlib
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


#: where the shipped built-in model and PRM live (normal ``transformers`` model directories)
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "tasks" / "builtin" / "model"
BUILTIN_PRM_DIR = Path(__file__).resolve().parent.parent / "tasks" / "builtin" / "prm"
BUILTIN_AGENT_DIR = Path(__file__).resolve().parent.parent / "tasks" / "agent" / "model"
#: the mixture of experts trained on the arithmetic world for RICE (``builtin:moe``)
BUILTIN_MOE_DIR = Path(__file__).resolve().parent.parent / "tasks" / "builtin" / "moe"
#: the agent model fine-tuned from the arithmetic model for long chains (``builtin:agent-plan``)
AGENT_PLAN_DIR = Path(__file__).resolve().parent.parent / "tasks" / "agent" / "plan-model"
#: the value head fitted on the shipped agent model's own episodes (``--value head``)
AGENT_VALUE_DIR = Path(__file__).resolve().parent.parent / "tasks" / "agent" / "value"
#: the CTRLS latent actions and policy trained on the shipped agent model's maze episodes (``ctrls``)
AGENT_CTRLS_DIR = Path(__file__).resolve().parent.parent / "tasks" / "agent" / "ctrls"


def agent_path(name: str = "builtin:agent") -> Path:
    """Directory of a shipped agent model (``builtin:agent``, or ``builtin:agent-plan``)."""
    where, train = (
        (AGENT_PLAN_DIR, "--init builtin --mix plan ") if name == "builtin:agent-plan" else (BUILTIN_AGENT_DIR, "")
    )
    if not (where / "config.json").exists():
        raise ModelLoadError(
            f"the built-in model {name} is missing from {where}: reinstall steerable or run "
            f"`steerable agent train {train}--out DIR` and pass --model DIR"
        )
    return where


def model_dir(name_or_path: str) -> str:
    """A model directory for ``builtin`` / ``builtin:arith`` (the arithmetic model), ``builtin:agent``,
    ``builtin:agent-plan``, ``builtin:moe``, or a path."""
    if name_or_path in ("builtin", "builtin:arith"):
        return str(builtin_path())
    if name_or_path in ("builtin:agent", "builtin:agent-plan"):
        return str(agent_path(name_or_path))
    if name_or_path == "builtin:moe":
        if not (BUILTIN_MOE_DIR / "config.json").exists():
            raise ModelLoadError(
                f"the built-in model builtin:moe is missing from {BUILTIN_MOE_DIR}: run "
                "`steerable builtin train --arch moe --corrections 0.05 --out DIR` and pass --model DIR"
            )
        return str(BUILTIN_MOE_DIR)
    return name_or_path


def builtin_path() -> Path:
    """Directory of the shipped model."""
    if not (BUILTIN_DIR / "config.json").exists():
        raise ModelLoadError(
            f"the built-in model is missing from {BUILTIN_DIR}: reinstall steerable or run "
            "`steerable builtin train --out DIR` and pass --model DIR"
        )
    return BUILTIN_DIR


def load_model(name_or_path: str, device: str = "auto", dtype: str = "float32"):
    """``(model, tokenizer)`` for a causal LM directory (or ``builtin``), in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    name_or_path = model_dir(name_or_path)
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


#: Weight files up to this size are hashed whole; larger ones by size, head and tail (a 16 GB model in a second).
_WHOLE_HASH_BYTES = 256 << 20
_PART_BYTES = 16 << 20


def files_fingerprint(directory: str | Path) -> str:
    """A sha256 of a model directory's model files: config and tokenizer whole, weights whole or by size, head and tail.

    Two directories holding the same files get the same fingerprint wherever
    they lie; retrained weights (RL, a new built-in model) get another one.
    Other files (a run's logs and checkpoints beside the model) do not count.
    """
    h = hashlib.sha256()
    for f in sorted(p for p in Path(directory).iterdir() if p.is_file() and _is_model_file(p.name)):
        size = f.stat().st_size
        h.update(f"{f.name}\0{size}\0".encode())
        with f.open("rb") as fh:
            if size <= _WHOLE_HASH_BYTES:
                h.update(fh.read())
            else:
                h.update(fh.read(_PART_BYTES))
                fh.seek(size - _PART_BYTES)
                h.update(fh.read(_PART_BYTES))
    return h.hexdigest()[:16]


def _is_model_file(name: str) -> bool:
    weights = name.endswith((".safetensors", ".bin", ".pt", ".model", ".tiktoken"))
    return (
        weights
        or name in ("config.json", "generation_config.json")
        or name.startswith(("tokenizer", "vocab", "merges", "special_tokens"))
    )


def model_fingerprint(name_or_path: str) -> str:
    """:func:`files_fingerprint` of a model directory (``builtin``: the built-in model's)."""
    name_or_path = model_dir(name_or_path)
    p = Path(name_or_path)
    if not p.is_dir():
        raise ModelLoadError(f"model path {name_or_path!r} is not a directory: pass a model directory or 'builtin'")
    return files_fingerprint(p)
