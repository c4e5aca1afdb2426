"""Steering artifacts on disk: safetensors tensors plus a JSON header naming the model they belong to.

One file (``NAME.safetensors``): the tensors (``vector`` for an addition,
``direction`` for an ablation, both when a refusal direction is kept for
either use) and, in the safetensors metadata under ``steerable``, a JSON
header: the method, how to apply it (layers, strength, scope) and the model
fingerprint (architecture, hidden size, layer count, a hash of the
tokenizer's vocabulary). Loading it for another model is a clear error, not a
silent wrong patch.
"""

from __future__ import annotations

import json
import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from steerable.errors import InputError
from steerable.steer.controller import Controller
from steerable.steer.fingerprint import check_fingerprint, fingerprint
from steerable.steer.interventions import Ablate, Add, Intervention, Steering

__all__ = ["Steers", "SteeringVector", "fingerprint", "load_steering", "steering_context"]

FORMAT = "steerable.vector/1"


@dataclass(frozen=True)
class SteeringVector:
    """A vector (or direction) and how to apply it. ``mode`` is ``add`` or ``ablate``."""

    method: str  # mean, pca, probe, refusal, grains, ...
    mode: str  # add | ablate
    model: dict  # fingerprint of the model it was extracted from
    vector: torch.Tensor | None = None  # [hidden] or [n_layers, hidden], for addition
    direction: torch.Tensor | None = None  # [hidden] or [k, hidden], for ablation
    layers: tuple[int, ...] | None = None  # addition layers; None = all
    strength: float = 1.0
    scope: str = "all"
    norm_preserve: bool = False
    info: dict = field(default_factory=dict)  # how it was made (prompt sets, scores, ...)

    def interventions(self, mode: str | None = None, strength: float | None = None) -> list[Intervention]:
        mode = mode or self.mode
        if mode == "ablate":
            if self.direction is None:
                raise InputError(f"this {self.method} artifact holds no direction to ablate: use --mode add")
            return [Ablate(self.direction, scope=self.scope)]
        if mode == "add":
            if self.vector is None:
                raise InputError(f"this {self.method} artifact holds no vector to add: use --mode ablate")
            s = self.strength if strength is None else strength
            return [Add(self.vector, self.layers, s, scope=self.scope, norm_preserve=self.norm_preserve)]
        raise InputError(f"unknown steering mode {mode!r}: use add or ablate")

    def steering(
        self, model, layers_path: str | None = None, mode: str | None = None, strength: float | None = None
    ) -> Steering:
        """The context manager that applies this artifact (``mode`` and ``strength`` override its own)."""
        return Steering(model, self.interventions(mode, strength), layers_path)

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {}
        if self.vector is not None:
            tensors["vector"] = self.vector.detach().float().cpu().clone()
        if self.direction is not None:
            tensors["direction"] = self.direction.detach().float().cpu().clone()
        header = {
            "format": FORMAT,
            "method": self.method,
            "mode": self.mode,
            "model": self.model,
            "layers": list(self.layers) if self.layers is not None else None,
            "strength": self.strength,
            "scope": self.scope,
            "norm_preserve": self.norm_preserve,
            "info": self.info,
        }
        save_file(tensors, str(path), metadata={"steerable": json.dumps(header)})
        return path

    @classmethod
    def load(cls, path: str | Path, model=None, tokenizer=None, layers_path: str | None = None) -> SteeringVector:
        """Read an artifact; with ``model`` and ``tokenizer`` given, refuse one made for another model."""
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise InputError(f"no steering artifact at {str(path)!r}: create one with `steerable steer extract`")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except Exception as e:  # safetensors raises its own error types for a corrupt file
            raise InputError(f"{path} is not a safetensors file ({e}): pass a steering artifact") from None
        if "steerable" not in meta:
            raise InputError(f"{path} has no steerable header: it was not written by steerable")
        h = json.loads(meta["steerable"])
        art = cls(
            method=h["method"],
            mode=h["mode"],
            model=h["model"],
            vector=tensors.get("vector"),
            direction=tensors.get("direction"),
            layers=tuple(h["layers"]) if h.get("layers") is not None else None,
            strength=float(h.get("strength", 1.0)),
            scope=h.get("scope", "all"),
            norm_preserve=bool(h.get("norm_preserve", False)),
            info=h.get("info", {}),
        )
        if model is not None and tokenizer is not None:
            art.check(model, tokenizer, layers_path, path)
        return art

    def check(self, model, tokenizer, layers_path: str | None = None, where: str | Path = "artifact") -> None:
        check_fingerprint(self.model, model, tokenizer, layers_path, where)


class Steers(Protocol):
    """A loaded artifact (a vector or a trained controller): it becomes a steering context on a model."""

    def steering(
        self, model, layers_path: str | None = None, mode: str | None = None, strength: float | None = None
    ) -> AbstractContextManager: ...


def load_steering(path: str | Path, model, tokenizer, layers_path: str | None = None) -> Steers:
    """A vector artifact, a trained controller or a RICE expert setting, checked against ``model``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise InputError(f"no steering artifact at {str(path)!r}: create one with `steerable steer extract`")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {}).get("steerable", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error types for a corrupt file
        raise InputError(f"{path} is not a safetensors file ({e}): pass a steering artifact") from None
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    bad += [k for k, v in header.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:  # a NaN steers every token to garbage (or to nothing) without any error
        raise InputError(f"{path} holds NaN or infinite values ({bad[0]}): re-create the artifact")
    if header.get("method") == "controller":
        ctl = Controller.from_file(tensors, header)
        check_fingerprint(ctl.model, model, tokenizer, layers_path, path)
        return ctl
    if header.get("method") == "rice":
        from steerable.steer.rice import Rice

        rice = Rice.from_file(tensors, header)
        rice.check(model, tokenizer, layers_path, path)
        return rice
    return SteeringVector.load(path, model, tokenizer, layers_path)


def steering_context(
    art: Steers, model, layers_path: str | None = None, mode: str | None = None, strength: float | None = None
) -> AbstractContextManager:
    """The context manager that applies a loaded artifact (``strength`` is alpha for a controller)."""
    return art.steering(model, layers_path, mode=mode, strength=strength)
