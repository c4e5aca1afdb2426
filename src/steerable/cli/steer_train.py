"""``steerable steer train-controller | grains``: steering that is trained or attributed, not averaged."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from steerable.cli.app import steer_app
from steerable.cli.common import Printing, generator, output_file, read_prompts
from steerable.cli.flags import command
from steerable.cli.steer import ArtifactOut, Layers, layer_choice
from steerable.config import opt
from steerable.errors import InputError
from steerable.lm.loading import ModelConfig
from steerable.steer.controller import ControllerConfig
from steerable.tasks.loader import contrast_prompts


@dataclass(frozen=True)
class ControllerData:
    prompts: str = opt("builtin:jailbreak", "builtin:jailbreak or JSONL (prompt, label 1 = harmful).", min_len=1)
    vector: Path | None = opt(
        None, "Vector artifact to steer along (default: per-layer mean difference of builtin:refusal)."
    )


@command(steer_app, "train-controller")
def train_controller_cmd(
    cfg: ControllerConfig, data: ControllerData, target: ArtifactOut, model: ModelConfig, layers: Layers,
    printing: Printing,
) -> None:  # fmt: skip
    """Train a weighted-steering controller (Guiding Giants): steer hard on harmful input, leave benign alone."""
    from steerable.steer.artifact import SteeringVector
    from steerable.steer.controller import train_controller
    from steerable.steer.extract import activations, mean_difference

    harmful, benign = contrast_prompts(data.prompts)
    output_file(target.out)
    gen = generator(model.model, model.device, model.dtype)
    lp = layers.layers_path
    if data.vector is not None:
        art = SteeringVector.load(data.vector, gen.model, gen.tokenizer, lp)
        if art.vector is None:
            raise InputError(f"{data.vector} holds no vector to steer along")
        direction = art.vector
    else:
        pos, neg = contrast_prompts("builtin:refusal") if model.model == "builtin" else (harmful, benign)
        direction = mean_difference(
            activations(gen.model, gen.tokenizer, pos, layers_path=lp)[0],
            activations(gen.model, gen.tokenizer, neg, layers_path=lp)[0],
        )  # [layers, hidden]
    log = []
    ctl = train_controller(
        gen.model, gen.tokenizer, harmful, benign, direction, cfg, lp,
        on_epoch=lambda e, loss, acc: log.append({"epoch": e, "loss": round(loss, 4), "accuracy": round(acc, 4)}),
    )  # fmt: skip
    ctl.info.update(prompts=data.prompts, log=log)
    path = ctl.save(target.out)
    res = {"artifact": str(path), "train_accuracy": ctl.info["train_accuracy"], "final_loss": log[-1]["loss"]}
    typer.echo(json.dumps(res) if printing.json else f"wrote {path}: " + json.dumps(res))


@dataclass(frozen=True)
class GrainsOptions:
    """GrAInS: integrated-gradients token attribution turned into a steering vector (paper defaults)."""

    prompts: str = opt(
        "builtin:jailbreak", "Prompts to attribute: the positives of a built-in set, or JSONL (prompt).", min_len=1
    )
    positive: str = opt("I can't help with that.", "The continuation to steer toward (y+).", min_len=1)
    negative: str = opt("Sure.", "The continuation to steer away from (y-).", min_len=1)
    k: int = opt(10, "Tokens masked on each side (paper: 10).", ge=1, le=4096)
    steps: int = opt(20, "Integrated-gradient steps (paper: 20).", ge=1, le=1000)
    pca: bool = opt(False, "First principal component of the deltas instead of their mean.")
    limit: int = opt(64, "Prompts used (attribution costs a backward pass per step).", ge=1, le=100_000)
    layers: str = opt("middle", "Layers to steer: 'middle', 'all' or e.g. 2,3.", min_len=1)
    strength: float = opt(4.0, "lambda in h' = h + lambda v (then rescaled to |h|).", ge=-1000, le=1000)


@command(steer_app, "grains")
def grains_cmd(
    opts: GrainsOptions, target: ArtifactOut, model: ModelConfig, layers: Layers, printing: Printing
) -> None:
    """GrAInS: a steering vector from the tokens integrated gradients blame for y+ over y-, norm-preserving."""
    from rich.progress import Progress

    from steerable.steer.artifact import SteeringVector, fingerprint
    from steerable.steer.grains import grains_vector
    from steerable.steer.layers import decoder_layers

    if opts.prompts.startswith("builtin:"):
        texts = contrast_prompts(opts.prompts)[0]
    else:
        texts = read_prompts([], Path(opts.prompts))
    texts = texts[:: max(1, len(texts) // opts.limit)][: opts.limit]
    output_file(target.out)
    gen = generator(model.model, model.device, model.dtype)
    lp = layers.layers_path
    chosen = layer_choice(opts.layers, len(decoder_layers(gen.model, lp)))
    with Progress(disable=not sys.stderr.isatty(), transient=True) as bar:
        task = bar.add_task("attributing", total=len(texts))
        vec = grains_vector(
            gen.model, gen.tokenizer, texts, opts.positive, opts.negative, opts.k, opts.steps, opts.pca, lp,
            lambda: bar.advance(task),
        )  # fmt: skip
    info = {"prompts": opts.prompts, "n": len(texts), "positive": opts.positive, "negative": opts.negative}
    art = SteeringVector(
        method="grains",
        mode="add",
        model=fingerprint(gen.model, gen.tokenizer, lp),
        vector=vec,
        layers=chosen,
        strength=opts.strength,
        norm_preserve=True,
        info={**info, "k": opts.k, "pca": opts.pca},
    )
    path = art.save(target.out)
    res = {"artifact": str(path), "layers": chosen, "norm_by_layer": [round(float(x), 3) for x in vec.norm(dim=-1)]}
    typer.echo(json.dumps(res) if printing.json else f"wrote {path}: " + json.dumps(res))
