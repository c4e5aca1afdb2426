"""``steerable steer extract | select-refusal | apply | eval | export-gguf | import-gguf``."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import typer

from steerable.cli.app import steer_app
from steerable.cli.common import Printing, PromptsFile, generator, output_file, read_prompts
from steerable.cli.flags import command
from steerable.config import opt
from steerable.errors import InputError
from steerable.lm.loading import ModelConfig
from steerable.lm.types import SamplingParams
from steerable.steer.refusal import RefusalConfig
from steerable.tasks.builtin.evaluate import EvalSet
from steerable.tasks.loader import contrast_prompts


@dataclass(frozen=True)
class Layers:
    """Where the decoder layers are, and which to steer."""

    layers_path: str | None = opt(None, "Dotted path of the decoder layers when they cannot be found.", min_len=1)


@dataclass(frozen=True)
class ArtifactOut:
    out: Path = opt(..., "Where to write the artifact (.safetensors).")


@dataclass(frozen=True)
class ExtractOptions:
    """A steering vector from contrastive prompts."""

    prompts: str = opt("builtin:refusal", "builtin:refusal, builtin:efficiency, or JSONL (prompt, label).", min_len=1)
    method: Literal["mean", "pca", "probe"] = opt("mean", "mean (CAA), pca (of pair differences) or probe (logistic).")
    layers: str = opt("middle", "Layers to steer: 'middle', 'all' or e.g. 1,2.", min_len=1)
    position: int = opt(-1, "Token position read, from the prompt's end.", le=-1, ge=-4096)
    strength: float = opt(1.0, "Default multiplier when the vector is applied.", ge=-1000, le=1000)
    scope: Literal["all", "prompt", "generated", "last"] = opt("all", "Positions steered.")


@dataclass(frozen=True)
class RefusalPrompts:
    prompts: str = opt("builtin:refusal", "builtin:refusal or JSONL (prompt, label 1 = harmful).", min_len=1)
    capability: str = opt(
        "auto",
        "Texts ablation must not change (KL <= --kl-max): JSONL (prompt), none, or auto (built-in: arithmetic).",
        min_len=1,
    )


@dataclass(frozen=True)
class Steering:
    """Artifacts to steer with, and overrides of their mode and strength."""

    artifact: tuple[Path, ...] = opt((), "Steering artifact (.safetensors); repeat to combine.", sep=None)
    mode: Literal["add", "ablate", "after", "before"] | None = opt(
        None, "add or ablate a vector, after or before for RICE (default: each artifact's own)."
    )
    strength: float | None = opt(
        None, "Override every artifact's strength (alpha for a controller, beta for RICE).", ge=-1000, le=1000
    )


def layer_choice(text: str, n: int) -> tuple[int, ...] | None:
    """``all`` (None), ``middle`` or comma-separated layer indices of a model with ``n`` layers."""
    if text == "all":
        return None
    if text == "middle":
        return (n // 2,)
    try:
        layers = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"--layers must be 'all', 'middle' or comma-separated integers (got {text!r})") from None
    bad = [x for x in layers if not 0 <= x < n]
    if bad:
        raise InputError(f"--layers {bad} out of range: this model has layers 0..{n - 1}")
    return layers


@command(steer_app, "extract")
def extract(opts: ExtractOptions, target: ArtifactOut, model: ModelConfig, layers: Layers, printing: Printing) -> None:
    """A steering vector from contrastive prompts (positive minus negative), one per layer."""
    from steerable.steer.artifact import SteeringVector, fingerprint
    from steerable.steer.extract import METHODS, activations
    from steerable.steer.layers import decoder_layers

    pos, neg = contrast_prompts(opts.prompts)
    if opts.method == "pca" and len(pos) != len(neg):
        raise InputError(f"pca needs paired prompts: {len(pos)} positive vs {len(neg)} negative")
    output_file(target.out)
    gen = generator(model.model, model.device, model.dtype)
    lp = layers.layers_path
    chosen = layer_choice(opts.layers, len(decoder_layers(gen.model, lp)))
    a = activations(gen.model, gen.tokenizer, pos, (opts.position,), layers_path=lp)[0]  # [layers, n, hidden]
    b = activations(gen.model, gen.tokenizer, neg, (opts.position,), layers_path=lp)[0]
    vec = METHODS[opts.method](a, b)  # [layers, hidden]
    art = SteeringVector(
        method=opts.method,
        mode="add",
        model=fingerprint(gen.model, gen.tokenizer, lp),
        vector=vec,
        layers=chosen,
        strength=opts.strength,
        scope=opts.scope,
        info={"prompts": opts.prompts, "positives": len(pos), "negatives": len(neg), "position": opts.position},
    )
    path = art.save(target.out)
    norms = [round(float(x), 3) for x in vec.norm(dim=-1)]
    res = {"artifact": str(path), "method": opts.method, "layers": chosen, "norm_by_layer": norms}
    typer.echo(
        json.dumps(res) if printing.json else f"wrote {path} ({opts.method}, layers {chosen or 'all'}, norms {norms})"
    )


@command(steer_app, "select-refusal")
def select_refusal(
    cfg: RefusalConfig,
    data: RefusalPrompts,
    target: ArtifactOut,
    model: ModelConfig,
    layers: Layers,
    printing: Printing,
) -> None:
    """The refusal direction (Arditi et al. 2024): ablate it to stop refusals, add it to cause them."""
    from rich.progress import Progress

    from steerable.steer.artifact import SteeringVector, fingerprint
    from steerable.steer.layers import decoder_layers
    from steerable.steer.refusal import select_refusal_direction

    harmful, harmless = contrast_prompts(data.prompts)
    if data.capability == "auto":
        from steerable.tasks.builtin.contrast import capability_texts

        guard = capability_texts() if data.prompts.startswith("builtin:") else []
    elif data.capability == "none":
        guard = []
    else:
        guard = read_prompts([], Path(data.capability))
    output_file(target.out)
    gen = generator(model.model, model.device, model.dtype)
    lp = layers.layers_path
    n = len(decoder_layers(gen.model, lp))
    total = len(cfg.positions) * sum(1 for i in range(n) if i < cfg.max_layer_frac * n)
    with Progress(disable=not sys.stderr.isatty(), transient=True) as bar:
        task = bar.add_task("candidates", total=total)
        sel = select_refusal_direction(
            gen.model, gen.tokenizer, harmful, harmless, cfg, lp, lambda: bar.advance(task), guard
        )
    art = SteeringVector(
        method="refusal",
        mode="ablate",
        model=fingerprint(gen.model, gen.tokenizer, lp),
        vector=sel.direction,
        direction=sel.subspace,
        layers=(sel.layer,),
        strength=cfg.addition_strength,
        info={"prompts": data.prompts, **sel.info()},
    )
    path = art.save(target.out)
    res = {"artifact": str(path), **{k: v for k, v in sel.info().items() if k != "candidates"}}
    typer.echo(json.dumps(res) if printing.json else f"wrote {path}: " + json.dumps(res))


def _artifacts(steering: Steering, gen, layers_path: str | None):
    """(path, context manager) per artifact: vectors, directions or controllers."""
    from steerable.steer.artifact import load_steering, steering_context

    out = []
    for p in steering.artifact:
        art = load_steering(p, gen.model, gen.tokenizer, layers_path)
        out.append((p, steering_context(art, gen.model, layers_path, steering.mode, steering.strength)))
    return out


@command(steer_app, "apply")
def apply(
    prompts: list[str] = typer.Argument(None, help="Prompts (escape sequences like \\n are decoded)."),
    *,
    steering: Steering,
    source: PromptsFile,
    sampling: SamplingParams = SamplingParams(temperature=0.0, max_new_tokens=64),
    model: ModelConfig,
    layers: Layers,
    printing: Printing,
) -> None:
    """Generate with steering applied."""
    from contextlib import ExitStack

    if not steering.artifact:
        raise InputError("steer apply needs an artifact: --artifact PATH (repeat to combine)")
    texts = read_prompts(prompts or [], source.prompts_file)
    gen = generator(model.model, model.device, model.dtype)
    with ExitStack() as stack:
        for _, ctx in _artifacts(steering, gen, layers.layers_path):
            stack.enter_context(ctx)
        comps = gen.generate(texts, sampling)
    for c in comps:
        typer.echo(json.dumps({"prompt": texts[c.prompt_index], "text": c.text}) if printing.json else c.text)


@command(steer_app, "eval")
def eval_(
    steering: Steering,
    evalset: EvalSet = EvalSet(split="medium", n=100),
    *,
    model: ModelConfig,
    layers: Layers,
    printing: Printing,
) -> None:
    """Refusal rates (harmful, benign, jailbreak, held-out), accuracy and solution length: base vs each artifact."""
    from contextlib import nullcontext

    from steerable.tasks.builtin.evaluate import steering_eval

    gen = generator(model.model, model.device, model.dtype)
    rows = [("base", nullcontext())] + [(str(p), c) for p, c in _artifacts(steering, gen, layers.layers_path)]
    results = []
    for name, ctx in rows:
        with ctx:
            res = steering_eval(
                gen, evalset.split, evalset.n, progress=sys.stderr.isatty(), n_requests=evalset.requests
            )
            results.append({"steering": name, **res})
    if printing.json:
        typer.echo(json.dumps(results))
        return
    from rich.console import Console
    from rich.table import Table

    kinds = list(results[0]["refusal"])
    t = Table(
        title=f"steering eval: greedy, {evalset.requests or 'all'} built-in requests, {evalset.n} {evalset.split} "
        "problems"
    )
    t.add_column("metric")
    for r in results:
        t.add_column(Path(r["steering"]).stem if r["steering"] != "base" else "base", justify="right")
    for k in kinds:
        t.add_row(f"refusal {k.replace('_', ' ')}", *(f"{r['refusal'][k]:.2f}" for r in results))
    t.add_row("accuracy", *(f"{r['accuracy']:.3f}" for r in results))
    t.add_row("mean solution tokens", *(f"{r['mean_solution_tokens']:.1f}" for r in results))
    t.add_row("verbose share", *(f"{r['verbose_share']:.2f}" for r in results))
    Console().print(t)


@dataclass(frozen=True)
class GGUFExport:
    artifact: Path = opt(..., "Steering artifact (.safetensors) holding a vector.")
    out: Path = opt(..., "Where to write the llama.cpp control vector (.gguf).")


@command(steer_app, "export-gguf")
def export_gguf_cmd(files: GGUFExport) -> None:
    """Write a vector as a llama.cpp control vector (repeng's format); our layer l is its direction.(l-1)."""
    from steerable.steer.artifact import SteeringVector
    from steerable.steer.gguf_io import export_gguf

    output_file(files.out)
    typer.echo(f"wrote {export_gguf(SteeringVector.load(files.artifact), files.out)}")


@command(steer_app, "import-gguf")
def import_gguf_cmd(
    gguf_file: Path = typer.Argument(..., help="A llama.cpp control vector (.gguf)."),
    *,
    target: ArtifactOut,
    model: ModelConfig,
    layers: Layers,
) -> None:
    """Read a llama.cpp control vector into a steering artifact for --model."""
    from steerable.steer.gguf_io import import_gguf

    output_file(target.out)
    gen = generator(model.model, model.device, model.dtype)
    art = import_gguf(gguf_file, gen.model, gen.tokenizer, layers.layers_path)
    typer.echo(f"wrote {art.save(target.out)} (layers {list(art.layers)})")
