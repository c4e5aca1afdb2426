"""``steerable steer ...``: extract vectors, select the refusal direction, apply and evaluate steering."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from steerable.errors import InputError

steer_app = typer.Typer(no_args_is_help=True, help="Activation steering: extract, select-refusal, apply, eval.")

MODEL = typer.Option("builtin", help="Model directory, or 'builtin'.")
LAYERS_PATH = typer.Option(None, help="Dotted path of the decoder layers when they cannot be found.")
OUT = typer.Option(..., help="Where to write the artifact (.safetensors).")
AS_JSON = typer.Option(False, "--json", help="Print one JSON object.")
DEVICE = typer.Option("auto", help="cpu, cuda, cuda:N or auto.")
DTYPE = typer.Option("float32", help="float32, bfloat16 or float16.")


def _gen(model: str, device: str, dtype: str):
    from steerable.cli import _generator

    return _generator(model, device, dtype)


def _labels(value) -> bool | None:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("positive", "pos", "negative", "neg", "true", "false"):
        return value.lower() in ("positive", "pos", "true")
    return None


def contrast_prompts(spec: str) -> tuple[list[str], list[str]]:
    """``builtin:refusal``, ``builtin:efficiency`` or a JSONL file of ``prompt`` and ``label`` (1 = positive)."""
    if spec.startswith("builtin:"):
        from steerable.tasks.builtin.contrast import contrast_set

        return contrast_set(spec.split(":", 1)[1])
    from steerable.tasks.loader import read_jsonl

    pos, neg = [], []
    for n, row in read_jsonl(Path(spec), "'prompt' and 'label'"):
        label = _labels(row.get("label"))
        if not isinstance(row.get("prompt"), str) or label is None:
            raise InputError(f"{spec}:{n} needs a string 'prompt' and a 'label' of 1/0 (positive/negative)")
        (pos if label else neg).append(row["prompt"])
    if not pos or not neg:
        raise InputError(f"{spec} needs both positive (label 1) and negative (label 0) prompts")
    return pos, neg


def _layers(text: str, n: int) -> tuple[int, ...] | None:
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


def _positions(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"positions must be negative integers like -1,-2 (got {text!r})") from None
    if not out or any(p >= 0 for p in out):
        raise InputError(f"positions count from the prompt's end and must be negative (got {text!r})")
    return out


@steer_app.command("extract")
def extract(
    prompts: str = typer.Option(
        "builtin:refusal", help="builtin:refusal, builtin:efficiency, or JSONL (prompt, label)."
    ),
    method: str = typer.Option("mean", help="mean (CAA), pca (of pair differences) or probe (logistic)."),
    layers: str = typer.Option("middle", help="Layers to steer: 'middle', 'all' or e.g. 1,2."),
    position: int = typer.Option(-1, help="Token position read, from the prompt's end."),
    strength: float = typer.Option(1.0, help="Default multiplier when the vector is applied."),
    scope: str = typer.Option("all", help="Positions steered: all, prompt, generated or last."),
    out: Path = OUT,
    model: str = MODEL,
    layers_path: str | None = LAYERS_PATH,
    as_json: bool = AS_JSON,
    device: str = DEVICE,
    dtype: str = DTYPE,
) -> None:
    """A steering vector from contrastive prompts (positive minus negative), one per layer."""
    from steerable.steer.artifact import SteeringVector, fingerprint
    from steerable.steer.extract import METHODS, activations
    from steerable.steer.interventions import SCOPES
    from steerable.steer.layers import decoder_layers

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if scope not in SCOPES:
        raise InputError(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
    pos, neg = contrast_prompts(prompts)
    _positions(str(position))
    if method == "pca" and len(pos) != len(neg):
        raise InputError(f"pca needs paired prompts: {len(pos)} positive vs {len(neg)} negative")
    gen = _gen(model, device, dtype)
    n = len(decoder_layers(gen.model, layers_path))
    chosen = _layers(layers, n)
    where = _positions(str(position))
    a = activations(gen.model, gen.tokenizer, pos, where, layers_path=layers_path)[0]  # [layers, n, hidden]
    b = activations(gen.model, gen.tokenizer, neg, where, layers_path=layers_path)[0]
    vec = METHODS[method](a, b)  # [layers, hidden]
    art = SteeringVector(
        method=method,
        mode="add",
        model=fingerprint(gen.model, gen.tokenizer, layers_path),
        vector=vec,
        layers=chosen,
        strength=strength,
        scope=scope,
        info={"prompts": prompts, "positives": len(pos), "negatives": len(neg), "position": position},
    )
    path = art.save(out)
    norms = [round(float(x), 3) for x in vec.norm(dim=-1)]
    res = {"artifact": str(path), "method": method, "layers": chosen, "norm_by_layer": norms}
    typer.echo(json.dumps(res) if as_json else f"wrote {path} ({method}, layers {chosen or 'all'}, norms {norms})")


@steer_app.command("select-refusal")
def select_refusal(
    prompts: str = typer.Option("builtin:refusal", help="builtin:refusal or JSONL (prompt, label 1 = harmful)."),
    positions: str = typer.Option("-1,-2,-3", help="Post-instruction positions, from the prompt's end."),
    kl_max: float = typer.Option(0.1, help="Harmless next-token KL allowed under ablation."),
    max_layer_frac: float = typer.Option(0.8, help="Candidates only from layers below this share of depth."),
    addition_strength: float = typer.Option(1.0, help="Multiple of the direction added by the induce-refusal filter."),
    max_rank: int = typer.Option(1, help="1 is the paper; more grows an ablation subspace greedily."),
    refusal_tokens: str = typer.Option("I", help="Comma-separated first tokens of a refusal."),
    capability: str = typer.Option(
        "auto",
        help="Texts ablation must not change (KL <= --kl-max): JSONL (prompt), none, or auto (built-in: arithmetic).",
    ),
    out: Path = OUT,
    model: str = MODEL,
    layers_path: str | None = LAYERS_PATH,
    as_json: bool = AS_JSON,
    device: str = DEVICE,
    dtype: str = DTYPE,
) -> None:
    """The refusal direction (Arditi et al. 2024): ablate it to stop refusals, add it to cause them."""
    from rich.progress import Progress

    from steerable.steer.artifact import SteeringVector, fingerprint
    from steerable.steer.layers import decoder_layers
    from steerable.steer.refusal import RefusalConfig, select_refusal_direction

    if max_rank < 1 or kl_max <= 0 or not 0 < max_layer_frac <= 1:
        raise InputError("--max-rank must be >= 1, --kl-max > 0 and --max-layer-frac in (0, 1]")
    cfg = RefusalConfig(
        positions=_positions(positions),
        max_layer_frac=max_layer_frac,
        kl_max=kl_max,
        refusal_tokens=tuple(t for t in refusal_tokens.split(",") if t),
        addition_strength=addition_strength,
        max_rank=max_rank,
    )
    harmful, harmless = contrast_prompts(prompts)
    if capability == "auto":
        from steerable.tasks.builtin.contrast import capability_texts

        guard = capability_texts() if prompts.startswith("builtin:") else []
    elif capability == "none":
        guard = []
    else:
        from steerable.cli import _read_prompts

        guard = _read_prompts([], Path(capability))
    gen = _gen(model, device, dtype)
    n = len(decoder_layers(gen.model, layers_path))
    total = len(cfg.positions) * sum(1 for i in range(n) if i < max_layer_frac * n)
    with Progress(disable=not sys.stderr.isatty(), transient=True) as bar:
        task = bar.add_task("candidates", total=total)
        sel = select_refusal_direction(
            gen.model, gen.tokenizer, harmful, harmless, cfg, layers_path, lambda: bar.advance(task), guard
        )
    art = SteeringVector(
        method="refusal",
        mode="ablate",
        model=fingerprint(gen.model, gen.tokenizer, layers_path),
        vector=sel.direction,
        direction=sel.subspace,
        layers=(sel.layer,),
        strength=addition_strength,
        info={"prompts": prompts, **sel.info()},
    )
    path = art.save(out)
    res = {"artifact": str(path), **{k: v for k, v in sel.info().items() if k != "candidates"}}
    typer.echo(json.dumps(res) if as_json else f"wrote {path}: " + json.dumps(res))


def _artifacts(paths: list[Path], gen, layers_path, mode, strength):
    """(path, context manager) per artifact: vectors, directions or controllers."""
    from steerable.steer.artifact import load_steering, steering_context

    out = []
    for p in paths:
        art = load_steering(p, gen.model, gen.tokenizer, layers_path)
        out.append((p, steering_context(art, gen.model, layers_path, mode, strength)))
    return out


@steer_app.command("apply")
def apply(
    prompts: list[str] = typer.Argument(None, help="Prompts (escape sequences like \\n are decoded)."),
    artifact: list[Path] = typer.Option(..., help="Steering artifact(s); repeat to combine."),
    mode: str | None = typer.Option(None, help="add or ablate (default: the artifact's own)."),
    strength: float | None = typer.Option(None, help="Override the artifact's strength (add only)."),
    prompts_file: Path | None = typer.Option(None, "--prompts", help="JSONL with a 'prompt' field per line."),
    max_new_tokens: int = typer.Option(64, help="Tokens to generate."),
    temperature: float = typer.Option(0.0, help="0 is greedy."),
    seed: int | None = typer.Option(None, help="Seed for sampling."),
    model: str = MODEL,
    layers_path: str | None = LAYERS_PATH,
    as_json: bool = AS_JSON,
    device: str = DEVICE,
    dtype: str = DTYPE,
) -> None:
    """Generate with steering applied."""
    import codecs
    from contextlib import ExitStack

    from steerable.cli import _read_prompts
    from steerable.lm.types import SamplingParams

    texts = [codecs.decode(p, "unicode_escape") for p in _read_prompts(prompts or [], prompts_file)]
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    gen = _gen(model, device, dtype)
    with ExitStack() as stack:
        for _, ctx in _artifacts(artifact, gen, layers_path, mode, strength):
            stack.enter_context(ctx)
        comps = gen.generate(texts, params)
    for c in comps:
        typer.echo(json.dumps({"prompt": texts[c.prompt_index], "text": c.text}) if as_json else c.text)


@steer_app.command("eval")
def eval_(
    artifact: list[Path] = typer.Option([], help="Steering artifact(s) to compare with the base model; repeatable."),
    mode: str | None = typer.Option(None, help="add or ablate for every artifact (default: each one's own)."),
    strength: float | None = typer.Option(None, help="Override every artifact's strength."),
    split: str = typer.Option("medium", help="Arithmetic split for accuracy and length."),
    n: int = typer.Option(100, help="Arithmetic problems."),
    requests: int = typer.Option(0, help="Request prompts, evenly spaced over all 910 (0: all)."),
    model: str = MODEL,
    layers_path: str | None = LAYERS_PATH,
    as_json: bool = AS_JSON,
    device: str = DEVICE,
    dtype: str = DTYPE,
) -> None:
    """Refusal rates (harmful, benign, jailbreak, held-out), accuracy and solution length: base vs each artifact."""
    from contextlib import nullcontext

    from steerable.tasks.builtin.arithmetic import split_range
    from steerable.tasks.builtin.evaluate import steering_eval

    split_range(split)
    if n < 1:
        raise InputError(f"--n must be >= 1 (got {n})")
    gen = _gen(model, device, dtype)
    rows = [("base", nullcontext())] + [(str(p), c) for p, c in _artifacts(artifact, gen, layers_path, mode, strength)]
    results = []
    for name, ctx in rows:
        with ctx:
            results.append(
                {"steering": name, **steering_eval(gen, split, n, progress=sys.stderr.isatty(), n_requests=requests)}
            )
    if as_json:
        typer.echo(json.dumps(results))
        return
    from rich.console import Console
    from rich.table import Table

    kinds = list(results[0]["refusal"])
    t = Table(title=f"steering eval: greedy, {requests or 'all'} built-in requests, {n} {split} problems")
    t.add_column("metric")
    for r in results:
        t.add_column(Path(r["steering"]).stem if r["steering"] != "base" else "base", justify="right")
    for k in kinds:
        t.add_row(f"refusal {k.replace('_', ' ')}", *(f"{r['refusal'][k]:.2f}" for r in results))
    t.add_row("accuracy", *(f"{r['accuracy']:.3f}" for r in results))
    t.add_row("mean solution tokens", *(f"{r['mean_solution_tokens']:.1f}" for r in results))
    t.add_row("verbose share", *(f"{r['verbose_share']:.2f}" for r in results))
    Console().print(t)


@steer_app.command("export-gguf")
def export_gguf_cmd(
    artifact: Path = typer.Option(..., help="Steering artifact (.safetensors) holding a vector."),
    out: Path = typer.Option(..., help="Where to write the llama.cpp control vector (.gguf)."),
) -> None:
    """Write a vector as a llama.cpp control vector (repeng's format); our layer l is its direction.(l-1)."""
    from steerable.steer.artifact import SteeringVector
    from steerable.steer.gguf_io import export_gguf

    typer.echo(f"wrote {export_gguf(SteeringVector.load(artifact), out)}")


@steer_app.command("import-gguf")
def import_gguf_cmd(
    gguf_file: Path = typer.Argument(..., help="A llama.cpp control vector (.gguf)."),
    out: Path = OUT,
    model: str = MODEL,
    layers_path: str | None = LAYERS_PATH,
    device: str = DEVICE,
) -> None:
    """Read a llama.cpp control vector into a steering artifact for --model."""
    from steerable.steer.gguf_io import import_gguf

    gen = _gen(model, device, "float32")
    art = import_gguf(gguf_file, gen.model, gen.tokenizer, layers_path)
    typer.echo(f"wrote {art.save(out)} (layers {list(art.layers)})")


@steer_app.command("train-controller")
def train_controller_cmd(
    prompts: str = typer.Option("builtin:jailbreak", help="builtin:jailbreak or JSONL (prompt, label 1 = harmful)."),
    vector: Path | None = typer.Option(
        None, help="Vector artifact to steer along (default: per-layer mean difference of builtin:refusal)."
    ),
    alpha: float = typer.Option(4.0, help="Patch size at full scale (the paper's 4; 3 suits the built-in model)."),
    epochs: int = typer.Option(10, help="Training epochs (paper: 10)."),
    lr: float = typer.Option(5e-5, help="AdamW learning rate (paper: 5e-5)."),
    read_layers: int = typer.Option(4, help="Last layers whose last-token outputs the controller reads."),
    seed: int = typer.Option(0, help="Seed for initialisation and batch order."),
    out: Path = OUT,
    model: str = MODEL,
    layers_path: str | None = LAYERS_PATH,
    as_json: bool = AS_JSON,
    device: str = DEVICE,
) -> None:
    """Train a weighted-steering controller (Guiding Giants): steer hard on harmful input, leave benign alone."""
    from steerable.steer.artifact import SteeringVector
    from steerable.steer.controller import ControllerConfig, train_controller
    from steerable.steer.extract import activations, mean_difference

    if epochs < 1 or lr <= 0 or alpha <= 0:
        raise InputError("--epochs must be >= 1 and --lr, --alpha > 0")
    harmful, benign = contrast_prompts(prompts)
    gen = _gen(model, device, "float32")
    if vector is not None:
        art = SteeringVector.load(vector, gen.model, gen.tokenizer, layers_path)
        if art.vector is None:
            raise InputError(f"{vector} holds no vector to steer along")
        direction = art.vector
    else:
        pos, neg = contrast_prompts("builtin:refusal") if model == "builtin" else (harmful, benign)
        direction = mean_difference(
            activations(gen.model, gen.tokenizer, pos, layers_path=layers_path)[0],
            activations(gen.model, gen.tokenizer, neg, layers_path=layers_path)[0],
        )  # [layers, hidden]
    cfg = ControllerConfig(read_layers=read_layers, alpha=alpha, lr=lr, epochs=epochs, seed=seed)
    log = []
    ctl = train_controller(
        gen.model, gen.tokenizer, harmful, benign, direction, cfg, layers_path,
        on_epoch=lambda e, loss, acc: log.append({"epoch": e, "loss": round(loss, 4), "accuracy": round(acc, 4)}),
    )  # fmt: skip
    ctl.info.update(prompts=prompts, log=log)
    path = ctl.save(out)
    res = {"artifact": str(path), "train_accuracy": ctl.info["train_accuracy"], "final_loss": log[-1]["loss"]}
    typer.echo(json.dumps(res) if as_json else f"wrote {path}: " + json.dumps(res))


@steer_app.command("grains")
def grains_cmd(
    prompts: str = typer.Option(
        "builtin:jailbreak", help="Prompts to attribute: the positives of a built-in set, or JSONL (prompt)."
    ),
    positive: str = typer.Option("I can't help with that.", help="The continuation to steer toward (y+)."),
    negative: str = typer.Option("Sure.", help="The continuation to steer away from (y-)."),
    k: int = typer.Option(10, help="Tokens masked on each side (paper: 10)."),
    steps: int = typer.Option(20, help="Integrated-gradient steps (paper: 20)."),
    pca: bool = typer.Option(False, help="First principal component of the deltas instead of their mean."),
    limit: int = typer.Option(64, help="Prompts used (attribution costs a backward pass per step)."),
    layers: str = typer.Option("middle", help="Layers to steer: 'middle', 'all' or e.g. 2,3."),
    strength: float = typer.Option(4.0, help="lambda in h' = h + lambda v (then rescaled to |h|)."),
    out: Path = OUT,
    model: str = MODEL,
    layers_path: str | None = LAYERS_PATH,
    as_json: bool = AS_JSON,
    device: str = DEVICE,
) -> None:
    """GrAInS: a steering vector from the tokens integrated gradients blame for y+ over y-, norm-preserving."""
    from rich.progress import Progress

    from steerable.steer.artifact import SteeringVector, fingerprint
    from steerable.steer.grains import grains_vector
    from steerable.steer.layers import decoder_layers

    if limit < 1:
        raise InputError(f"--limit must be >= 1 (got {limit})")
    if prompts.startswith("builtin:"):
        texts = contrast_prompts(prompts)[0]
    else:
        from steerable.cli import _read_prompts

        texts = _read_prompts([], Path(prompts))
    texts = texts[:: max(1, len(texts) // limit)][:limit]
    gen = _gen(model, device, "float32")
    chosen = _layers(layers, len(decoder_layers(gen.model, layers_path)))
    with Progress(disable=not sys.stderr.isatty(), transient=True) as bar:
        task = bar.add_task("attributing", total=len(texts))
        vec = grains_vector(
            gen.model, gen.tokenizer, texts, positive, negative, k, steps, pca, layers_path, lambda: bar.advance(task)
        )
    art = SteeringVector(
        method="grains",
        mode="add",
        model=fingerprint(gen.model, gen.tokenizer, layers_path),
        vector=vec,
        layers=chosen,
        strength=strength,
        norm_preserve=True,
        info={"prompts": prompts, "n": len(texts), "positive": positive, "negative": negative, "k": k, "pca": pca},
    )
    path = art.save(out)
    res = {"artifact": str(path), "layers": chosen, "norm_by_layer": [round(float(x), 3) for x in vec.norm(dim=-1)]}
    typer.echo(json.dumps(res) if as_json else f"wrote {path}: " + json.dumps(res))
