"""What several commands share: loading a model, reading prompts, checking an output path, printing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from steerable.config import check_text, opt, unescape
from steerable.errors import InputError


@dataclass(frozen=True)
class Printing:
    """How a command prints its result."""

    json: bool = opt(False, "Print JSON instead of text or a table.", flag="--json")


@dataclass(frozen=True)
class PromptsFile:
    """Prompts from a file, beside those given as arguments."""

    prompts_file: Path | None = opt(None, "JSONL file with a 'prompt' field per line.", flag="--prompts")


def threads() -> None:
    """Two shared cores run 6-10x slower with the wrong thread count: use OMP_NUM_THREADS or all cores."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))


def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def generator(model: str, device: str, dtype: str = "float32"):
    from steerable.lm.local import LocalGenerator

    threads()
    quiet_transformers()
    return LocalGenerator.from_pretrained(model, device=device, dtype=dtype)


def read_prompts(prompts: list[str], prompts_file: Path | None) -> list[str]:
    """Argument prompts (backslash escapes decoded) then the file's (taken as written: JSON has its own escapes)."""
    out = [unescape(p, f"prompt {i + 1}") for i, p in enumerate(prompts)]
    if prompts_file is not None:
        from steerable.tasks.loader import read_jsonl

        for n, row in read_jsonl(prompts_file, "a 'prompt' field"):
            if not isinstance(row.get("prompt"), str):
                raise InputError(f'{prompts_file}:{n} has no \'prompt\' string: write {{"prompt": "..."}} per line')
            out.append(check_text(row["prompt"], f"{prompts_file}:{n}"))
    if not out:
        raise InputError("no prompts given: pass prompts as arguments or --prompts FILE.jsonl")
    return out


def output_dir(path: Path, flag: str = "--out") -> Path:
    """``path`` as a directory this process can write, made if missing; else a one-line InputError."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file: give a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{flag} {path} cannot be made: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path} is not writable: choose another directory")
    return path


def output_file(path: Path, flag: str = "--out") -> Path:
    """``path`` as a file this process can write (its directory made if missing); else a one-line InputError."""
    if path.is_dir():
        raise InputError(f"{flag} {path} is a directory: give a file name")
    output_dir(path.parent if str(path.parent) else Path("."), flag)
    return path
