"""A learned controller for weighted activation steering ("Guiding Giants: Lightweight Controllers for
Weighted Activation Steering in LLMs").

The controller reads the last-token outputs of the model's last ``read_layers``
layers, concatenated, and returns a global scale logit ``s`` and per-layer
weights ``w = σ(logits)`` (``Linear(read·d → 1024) → ReLU → Linear(1024 → 1 + L)``).
The patch at layer ``l`` is ``σ(s) · w_l · α · r̂`` on the residual stream entering
the layer, at the last prompt token and every generated token.

What we change, and why:

- **Scale.** The paper trains ``s`` with BCE-with-logits (harmful 1, benign 0);
  a logit is not a strength (a negative one would push benign prompts *away*
  from refusal), so we patch with ``σ(s)``, the probability the loss trains.
- **When it decides.** The paper recomputes the patch at every decoding step
  from the current activations, which needs the layers' outputs before the
  layers run: a second forward pass per token. We decide once per prompt, from
  an unsteered read of the prompt (one extra prefill pass, no extra decode
  pass), and keep the decision for every token generated from that prompt,
  across forks and selections of our generator (rows carry their prompt
  index). The signal the paper's controller discriminates on, harmful or
  benign intent, is in the prompt.
- **Per-layer vectors.** The paper patches one unit direction ``r̂`` at every
  layer. Residual norms grow with depth, so a push that matters at the last
  layers swamps the token embeddings at the first (in the built-in model even
  ``α = 2`` at layer 0 turns refusals into noise). Given a ``[layers, hidden]``
  stack (the mean-difference vector of each layer), we patch
  ``σ(s) · w_l · α · v_l``: each layer gets its own direction at its own scale.
  A single ``[hidden]`` direction is normalised and used at every layer, as in
  the paper.
- **Layer weights.** In the paper ``w`` gets gradient only from the
  regulariser ``0.1 · (mean|w − 0.5| + 0.01 · mean w)`` on harmful batches; we
  keep that (it pulls ``w`` toward 0.5 with a small preference for fewer
  layers), so the learned part that matters is ``s``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from steerable.config import check, opt
from steerable.errors import ConfigError, InputError
from steerable.lm.hooks import prompt_indices
from steerable.lm.padding import left_padded
from steerable.steer.fingerprint import fingerprint
from steerable.steer.interventions import _Positions
from steerable.steer.layers import decoder_layers, hidden_size


@dataclass(frozen=True)
class ControllerConfig:
    """How ``steerable steer train-controller`` trains the controller (its flags are these fields)."""

    read_layers: int = opt(4, "Last layers whose last-token outputs the controller reads.", ge=1, le=1024)
    hidden: int = opt(1024, "Width of the controller's hidden layer (paper: 1024).", ge=1, le=65536)
    # patch size at σ(s) = w_l = 1, in units of the unit direction
    alpha: float = opt(4.0, "Patch size at full scale (the paper's 4; 3 suits the built-in model).", gt=0, le=1000)
    lr: float = opt(5e-5, "AdamW learning rate (paper: 5e-5).", gt=0, le=1)
    epochs: int = opt(10, "Training epochs (paper: 10).", ge=1, le=10_000)
    batch_size: int = opt(8, "Prompts per batch.", ge=1, le=4096)
    reg: float = opt(0.1, "Weight of the layer-weight regulariser on harmful batches (paper: 0.1).", ge=0)
    seed: int = opt(0, "Seed for initialisation and batch order.", ge=0, lt=2**32)

    def __post_init__(self) -> None:
        check(self)


class WeightedController(nn.Module):
    def __init__(self, hidden_size: int, n_layers: int, read_layers: int, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(read_layers * hidden_size, width), nn.ReLU(), nn.Linear(width, 1 + n_layers))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[batch, read·hidden]`` -> scale logits ``[batch]`` and layer weights ``[batch, layers]``."""
        out = self.net(feats)
        return out[:, 0], torch.sigmoid(out[:, 1:])


class _Reader:
    """Catches the outputs of the last ``k`` layers at the last position of every row."""

    def __init__(self, layers: nn.ModuleList, k: int):
        if not 1 <= k <= len(layers):
            raise ConfigError(f"read_layers must be in 1..{len(layers)} (got {k})")
        self.layers, self.k = layers, k
        self.caught: list[torch.Tensor] = []

    def __enter__(self) -> _Reader:
        self.caught = []
        self.handles = [layer.register_forward_hook(self._catch) for layer in list(self.layers)[-self.k :]]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()

    def _catch(self, module, args, output) -> None:
        h = output[0] if isinstance(output, tuple) else output  # [batch, time, hidden]
        self.caught.append(h[:, -1].float())

    def features(self) -> torch.Tensor:
        return torch.cat(self.caught, dim=-1)  # [batch, k·hidden]


@torch.no_grad()
def read_features(model, tokenizer, prompts: Sequence[str], read_layers: int, batch_size: int = 32, layers_path=None):
    layers = decoder_layers(model, layers_path)
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch_size):
        with _Reader(layers, read_layers) as reader:
            model(**left_padded(tokenizer, prompts[i : i + batch_size], dev))
        out.append(reader.features())
    return torch.cat(out)


@dataclass
class Controller:
    """A trained controller with its direction: what ``steerable steer train-controller`` saves."""

    net: WeightedController
    direction: torch.Tensor  # [hidden] unit (the paper), or [layers, hidden] per-layer vectors
    config: ControllerConfig
    model: dict  # fingerprint
    info: dict

    def steering(
        self, model, layers_path: str | None = None, mode: str | None = None, strength: float | None = None
    ) -> ControllerSteering:
        """The context manager that steers ``model``; ``strength`` is alpha (default: the trained one)."""
        if mode not in (None, "add"):
            raise InputError("a controller only adds its direction: drop --mode")
        return ControllerSteering(model, self, layers_path, strength)

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path).with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"net.{k}": v.detach().float().cpu().contiguous() for k, v in self.net.state_dict().items()}
        tensors["direction"] = self.direction.detach().float().cpu().clone()
        header = {
            "format": "steerable.controller/1",
            "method": "controller",
            "model": self.model,
            "config": asdict(self.config),
            "info": self.info,
        }
        save_file(tensors, str(path), metadata={"steerable": json.dumps(header)})
        return path

    @classmethod
    def from_file(cls, tensors: dict, header: dict) -> Controller:
        cfg = ControllerConfig(**header["config"])
        fp = header["model"]
        net = WeightedController(fp["hidden_size"], fp["n_layers"], cfg.read_layers, cfg.hidden)
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        return cls(net.eval(), tensors["direction"], cfg, fp, header.get("info", {}))


def train_controller(
    model,
    tokenizer,
    harmful: Sequence[str],
    benign: Sequence[str],
    direction: torch.Tensor,
    config: ControllerConfig = ControllerConfig(),
    layers_path: str | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> Controller:
    """BCE on the scale (harmful 1, benign 0) plus the paper's layer-weight regulariser on harmful rows."""

    if not harmful or not benign:
        raise InputError("training a controller needs harmful and benign prompts")
    if float(direction.norm()) == 0:
        raise ConfigError("the steering direction is zero: extract a refusal direction first")
    if direction.dim() == 2 and direction.shape[0] != len(decoder_layers(model, layers_path)):
        raise ConfigError(f"{direction.shape[0]} per-layer vectors for a model with another layer count")
    n = len(decoder_layers(model, layers_path))
    feats = torch.cat(
        [
            read_features(model, tokenizer, harmful, config.read_layers, layers_path=layers_path),
            read_features(model, tokenizer, benign, config.read_layers, layers_path=layers_path),
        ]
    ).cpu()
    labels = torch.cat([torch.ones(len(harmful)), torch.zeros(len(benign))])
    g = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    net = WeightedController(hidden_size(model), n, config.read_layers, config.hidden)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr)
    for epoch in range(config.epochs):
        order = torch.randperm(len(labels), generator=g)
        total = correct = 0.0
        for i in range(0, len(order), config.batch_size):
            idx = order[i : i + config.batch_size]
            s, w = net(feats[idx])
            y = labels[idx]
            loss = nn.functional.binary_cross_entropy_with_logits(s, y)
            harm = y > 0.5
            if bool(harm.any()):
                wh = w[harm]
                loss = loss + config.reg * ((wh - 0.5).abs().mean() + 0.01 * wh.mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += float(((s > 0).float() == y).sum())
        if on_epoch:
            on_epoch(epoch, total / len(labels), correct / len(labels))
    info = {"harmful": len(harmful), "benign": len(benign), "train_accuracy": correct / len(labels)}
    vec = (direction / direction.norm() if direction.dim() == 1 else direction).float().cpu()
    return Controller(net.eval(), vec, config, fingerprint(model, tokenizer, layers_path), info)


class ControllerSteering:
    """Context manager: decide per prompt from an unsteered read, patch the last prompt token and every new one."""

    def __init__(self, model, controller: Controller, layers_path: str | None = None, alpha: float | None = None):
        self.model, self.c = model, controller
        self.layers = decoder_layers(model, layers_path)
        if len(self.layers) != controller.model["n_layers"] or hidden_size(model) != controller.model["hidden_size"]:
            raise ConfigError("this controller was trained for a model of another shape: train it on this model")
        self.alpha = controller.config.alpha if alpha is None else alpha
        self._positions = _Positions()
        self._coef: torch.Tensor | None = None  # [batch, layers]: σ(s)·w·α of each row
        self._table: torch.Tensor | None = None  # [prompt index, layers] decisions, within our generator
        self._chosen: torch.Tensor | None = None  # [prompt index, 1 + layers]: σ(s) and w of each decision
        self._last: torch.Tensor | None = None  # [batch, 1 + layers]: σ(s) and w of the latest prefill
        self._per_layer: list[torch.Tensor] = []
        self._index: torch.Tensor | None = None  # prompt indices the decode-step patch was built for
        self._reading = False
        self._handles: list = []
        self.last_scales: torch.Tensor | None = None  # σ(s) of the latest decided prompts, for inspection

    def __enter__(self) -> ControllerSteering:
        base = next(m for m in self.model.modules() if any(ch is self.layers for ch in m.children()))
        self._base = base
        self._handles.append(base.register_forward_pre_hook(self._on_call, with_kwargs=True))
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_pre_hook(self._patch(i), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _decide(self, kwargs: dict) -> torch.Tensor:
        """σ(s)·w·α per row from an unsteered pass over this call's tokens (no cache touched)."""
        read = {k: v for k, v in kwargs.items() if k not in ("cache", "past_key_values", "cache_position")}
        read["use_cache"] = False
        self._reading = True
        try:
            with torch.no_grad(), _Reader(self.layers, self.c.config.read_layers) as reader:
                self._base(**read)
        finally:
            self._reading = False
        net = self.c.net.to(reader.features().device)
        s, w = net(reader.features())
        self.last_scales = torch.sigmoid(s)
        self._last = torch.cat([self.last_scales[:, None], w], dim=1)
        return torch.sigmoid(s)[:, None] * w * self.alpha  # [batch, layers]

    def _on_call(self, module, args, kwargs):
        if self._reading:
            return
        if args:
            kwargs = {**kwargs, "input_ids": args[0]}
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
        index = prompt_indices()
        ref = kwargs.get("input_ids")
        ref = ref if ref is not None else kwargs.get("inputs_embeds")
        if past > 0 and ref.shape[1] == 1 and index is not None and self._table is not None:
            # a decode step in our generator: every row's one position is a new token, all in scope; the
            # patch changes only when forks or selections change which prompt each row belongs to
            if self._index is None or self._index.shape != index.shape or not torch.equal(self._index, index):
                self._set_patch(self._lookup(index), None)
                self._index = index
            return
        self._index = None
        self._positions.update((), kwargs, frozenset({"last"}))
        if past == 0:  # a prefill: decide for these prompts
            self._coef = self._decide(kwargs)
            if index is not None:  # a table by prompt index, so forks and selections find their prompt's decision
                # extended, not replaced: a server admits new prompts while earlier ones still decode
                self._table = _extended(self._table, index, self._coef)
                self._chosen = _extended(self._chosen, index, self._last)
        elif index is not None and self._table is not None:
            self._coef = self._lookup(index)
        if self._coef is None:
            raise ConfigError("the controller saw no prompt: enter the steering block before generating")
        self._set_patch(self._coef, self._positions.masks["last"])

    def chosen(self, prompts: Sequence[int] | None = None) -> list[dict]:
        """What the controller chose for each of ``prompts`` (our generator's prompt indices; None: the rows of
        the latest prefill): ``{"scale": σ(s), "weights": [w_l per layer]}``, the patch at layer ``l`` being
        ``scale · w_l · alpha`` times the layer's direction. Empty where it has decided nothing yet."""
        if prompts is None:
            rows = self._last
        elif self._chosen is None or max(prompts, default=-1) >= len(self._chosen):
            return []
        else:
            rows = self._chosen[torch.as_tensor(list(prompts), device=self._chosen.device)]
        if rows is None:
            return []
        return [{"scale": float(r[0]), "weights": [float(x) for x in r[1:]]} for r in rows.detach().cpu()]

    def report(self, prompts: Sequence[int] | None = None) -> dict | None:
        """What a response says the controller chose: ``{"layers", "alpha", "scale", "weights"}`` for the first
        of ``prompts`` (see :meth:`chosen`), and ``per_prompt`` (every prompt's) when there are several."""
        chosen = self.chosen(prompts)
        if not chosen:
            return None
        out = {"layers": list(range(len(self.layers))), "alpha": float(self.alpha), **chosen[0]}
        if len(chosen) > 1:
            out["per_prompt"] = chosen
        return out

    def _lookup(self, index: torch.Tensor) -> torch.Tensor:
        at = index.to(self._table.device)
        if int(at.max()) >= len(self._table) or bool(self._table[at, 0].isnan().any()):
            raise ConfigError("the controller has no decision for some prompts: start generation inside the block")
        return self._table[at]

    def _set_patch(self, coef: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Every layer's patch for this call at once, split per layer: ``[batch, time or 1, hidden]`` each."""
        d = self.c.direction.to(coef.device)
        d = d if d.dim() == 2 else d.expand(len(self.layers), -1)
        patch = coef[:, None, :, None] * d[None, None]  # [batch, 1, layers, hidden]
        if mask is not None:
            patch = mask[:, :, None, None].to(coef.dtype) * patch
        self._per_layer = [patch[:, :, i].contiguous() for i in range(len(self.layers))]

    def _patch(self, layer: int):
        def hook(module, args, kwargs):
            if self._reading:
                return None
            h = args[0] if args else kwargs["hidden_states"]  # [batch, time, hidden]
            p = self._per_layer[layer]
            new = h + (p if p.dtype == h.dtype and p.device == h.device else p.to(h.device, h.dtype))
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})

        return hook


def _extended(table: torch.Tensor | None, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``table`` (by prompt index, NaN where undecided) grown to hold ``index`` and with ``rows`` written there."""
    size = max(int(index.max()) + 1, 0 if table is None else len(table))
    out = rows.new_full((size, rows.shape[1]), float("nan"))
    if table is not None:
        out[: len(table)] = table.to(out.device)
    return out.index_copy(0, index.to(out.device), rows)
