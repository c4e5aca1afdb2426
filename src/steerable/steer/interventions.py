"""Interventions on the residual stream, applied by forward hooks that leave no trace.

- :class:`Add`: ``h += strength · w_l · v`` at the input of each chosen layer
  (CAA, Arditi et al.'s refusal addition; with ``norm_preserve`` the result is
  rescaled to ``‖h‖``, as GrAInS applies its vectors).
- :class:`Ablate`: ``h -= (h · r̂) r̂`` at every chosen layer's input and at its
  attention and MLP outputs (Arditi et al., "Refusal in Language Models Is
  Mediated by a Single Direction"), so no layer can write the direction back.

A **scope** says which token positions are touched: ``all`` real tokens,
``prompt`` tokens, ``generated`` tokens, or ``last`` (the last prompt token and
every generated one: the position that predicts each new token). Padding is
never touched. Positions and prompt lengths come from the call itself
(position ids, attention mask) and, inside our generator, from the prompt
lengths it publishes (:mod:`steerable.lm.hooks`), so steering is the same for
a row whether it is decoded alone, in a left-padded batch, or after a fork.

:class:`Steering` is a context manager: leaving the block, through an
exception too, removes every hook, and the model computes exactly what it did
before. ``attach()``/``detach()`` do the same for persistent use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from steerable.errors import ConfigError
from steerable.lm.hooks import prompt_lengths
from steerable.steer.layers import attention, decoder_layers, hidden_size, mlp

Scope = Literal["all", "prompt", "generated", "last"]
SCOPES = ("all", "prompt", "generated", "last")


@dataclass(frozen=True)
class Add:
    vector: torch.Tensor  # [hidden], or [n_layers, hidden]: one vector per model layer
    layers: tuple[int, ...] | None = None  # None: every layer
    strength: float = 1.0
    weights: tuple[float, ...] | None = None  # a strength per entry of ``layers``
    scope: Scope = "all"
    norm_preserve: bool = False


@dataclass(frozen=True)
class Ablate:
    direction: torch.Tensor  # [hidden], or [k, hidden] to remove a k-dimensional subspace
    layers: tuple[int, ...] | None = None  # None: every layer (the paper's choice)
    scope: Scope = "all"


Intervention = Add | Ablate


class _Positions:
    """Which positions of the current call each scope touches: ``[batch, time]`` bool masks."""

    def __init__(self) -> None:
        self.masks: dict[str, torch.Tensor] = {}
        self.prompt_lens: torch.Tensor | None = None  # remembered from a prefill, for calls outside our generator
        self._as: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def as_weights(self, scope: str, h: torch.Tensor) -> torch.Tensor:
        """The scope's mask as ``[batch, time, 1]`` in ``h``'s dtype, made once per call."""
        key = (scope, h.dtype)
        w = self._as.get(key)
        if w is None:
            m = self.masks.get(scope)
            if m is None or m.shape != h.shape[:2]:
                raise ConfigError("steering hooks ran outside a model call they could read: call the model itself")
            w = self._as[key] = m[..., None].to(h.dtype)
        return w

    def update(self, args: tuple, kwargs: dict, scopes: frozenset[str] = frozenset(SCOPES)) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        ref = ids if ids is not None else embeds
        batch, time = ref.shape[0], ref.shape[1]
        dev = ref.device
        mask2d = kwargs.get("attention_mask")
        mask2d = mask2d if isinstance(mask2d, torch.Tensor) and mask2d.dim() == 2 else None
        real = mask2d[:, -time:].bool() if mask2d is not None else torch.ones(batch, time, dtype=torch.bool, device=dev)
        self._as = {}
        if scopes <= {"all"}:  # the common case needs no positions: keep the per-call cost small
            self.masks = {"all": real}
            return
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
        pos = kwargs.get("position_ids")
        if isinstance(pos, torch.Tensor) and pos.dim() == 2:
            pos = pos.expand(batch, -1)
        elif mask2d is not None:
            pos = (mask2d.long().cumsum(1) - 1)[:, -time:]
        else:
            pos = torch.arange(past, past + time, device=dev).expand(batch, -1)
        lens = prompt_lengths()
        if lens is not None and len(lens) == batch:
            lens = lens.to(dev)
        elif past == 0:  # a prefill: the whole call is prompt
            lens = real.sum(1)
            self.prompt_lens = lens
        elif self.prompt_lens is not None and len(self.prompt_lens) == batch:
            lens = self.prompt_lens
        else:
            raise ConfigError(
                "steering cannot tell prompt from generated tokens in this call: decode through steerable's "
                "generator, or start from a prefill of the whole prompt"
            )
        lens = lens[:, None]
        self.masks = {
            "all": real,
            "prompt": real & (pos < lens),
            "generated": real & (pos >= lens),
            "last": real & (pos >= lens - 1),
        }


def _replace_hidden(args: tuple, kwargs: dict, new: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (new, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": new}


class Steering:
    """Apply interventions to ``model`` within a ``with`` block (or between ``attach`` and ``detach``)."""

    def __init__(self, model: nn.Module, interventions: Sequence[Intervention], layers_path: str | None = None):
        self.model = model
        self.layers = decoder_layers(model, layers_path)
        self.interventions = list(interventions)
        self.hidden = hidden_size(model)
        for iv in self.interventions:
            self._check(iv)
        self._positions = _Positions()
        self._scopes = frozenset(iv.scope for iv in self.interventions)
        self._handles: list = []
        self._bases: dict[int, torch.Tensor] = {}

    def _check(self, iv: Intervention) -> None:
        n = len(self.layers)
        if iv.scope not in SCOPES:
            raise ConfigError(f"unknown scope {iv.scope!r}: use one of {', '.join(SCOPES)}")
        vec = iv.vector if isinstance(iv, Add) else iv.direction
        per_layer_ok = isinstance(iv, Ablate) or vec.dim() == 1 or vec.shape[0] == n
        if vec.shape[-1] != self.hidden or vec.dim() not in (1, 2) or not per_layer_ok:
            raise ConfigError(
                f"steering vector of shape {tuple(vec.shape)} does not fit this model "
                f"(hidden size {self.hidden}, {n} layers): extract it from this model"
            )
        for layer in iv.layers or ():
            if not 0 <= layer < n:
                raise ConfigError(f"layer {layer} does not exist: this model has layers 0..{n - 1}")
        if isinstance(iv, Add) and iv.weights is not None and len(iv.weights) != len(iv.layers or range(n)):
            raise ConfigError(f"{len(iv.weights)} layer weights for {len(iv.layers or range(n))} layers: give one each")
        if isinstance(iv, Ablate) and bool((iv.direction.reshape(-1, self.hidden).norm(dim=-1) == 0).any()):
            raise ConfigError("cannot ablate a zero direction")

    # ---- hooks -------------------------------------------------------------------------------

    def attach(self) -> Steering:
        if self._handles:
            raise ConfigError("this steering is already attached: detach it first")
        try:
            base = self._base_module()
            self._handles.append(base.register_forward_pre_hook(self._on_call, with_kwargs=True))
            for i, layer in enumerate(self.layers):
                plan = [iv for iv in self.interventions if iv.layers is None or i in iv.layers]
                if not plan:
                    continue
                self._handles.append(layer.register_forward_pre_hook(self._layer_hook(i, plan), with_kwargs=True))
                dirs = [iv for iv in plan if isinstance(iv, Ablate)]
                if dirs:
                    for block in (attention(layer), mlp(layer)):
                        self._handles.append(block.register_forward_hook(self._output_hook(dirs)))
        except BaseException:
            self.detach()
            raise
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> Steering:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def _base_module(self) -> nn.Module:
        """The module that owns the layer list: it sees the attention mask and position ids of every call."""
        for module in self.model.modules():
            if any(child is self.layers for child in module.children()):
                return module
        return self.model

    def _on_call(self, module, args, kwargs):
        self._positions.update(args, kwargs, self._scopes)

    def _layer_hook(self, index: int, plan: list[Intervention]):
        def hook(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]  # [batch, time, hidden]
            for iv in plan:
                h = self._apply(iv, h, index)
            return _replace_hidden(args, kwargs, h)

        return hook

    def _output_hook(self, dirs: list[Ablate]):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            for iv in dirs:
                out = self._ablate(iv, out)
            return (out, *output[1:]) if isinstance(output, tuple) else out

        return hook

    def _mask(self, scope: str, h: torch.Tensor) -> torch.Tensor:
        return self._positions.as_weights(scope, h)  # [batch, time, 1]

    def _apply(self, iv: Intervention, h: torch.Tensor, index: int) -> torch.Tensor:
        if isinstance(iv, Ablate):
            return self._ablate(iv, h)
        v = iv.vector[index] if iv.vector.dim() == 2 else iv.vector
        w = iv.weights[(iv.layers or range(len(self.layers))).index(index)] if iv.weights else 1.0
        m = self._mask(iv.scope, h)
        new = h + m * (iv.strength * w) * v.to(h.device, h.dtype)
        if iv.norm_preserve:
            scale = h.norm(dim=-1, keepdim=True) / new.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            new = m * new * scale + (1 - m) * h
        return new

    def _ablate(self, iv: Ablate, h: torch.Tensor) -> torch.Tensor:
        basis = self._bases.get(id(iv))
        if basis is None or basis.device != h.device or basis.dtype != h.dtype:
            d = iv.direction.reshape(-1, iv.direction.shape[-1]).double()
            basis = torch.linalg.qr(d.T).Q.T.to(h.device, h.dtype)  # [k, hidden], orthonormal rows
            self._bases[id(iv)] = basis
        return h - self._mask(iv.scope, h) * ((h @ basis.T) @ basis)


def steer(model: nn.Module, *interventions: Intervention, layers_path: str | None = None) -> Steering:
    """``with steer(model, Add(v, layers=(2,), strength=4)): ...`` — the model is itself again afterwards."""
    return Steering(model, interventions, layers_path)
