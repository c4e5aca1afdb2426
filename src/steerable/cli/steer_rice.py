"""``steerable steer rice | rice-eval``: steering a mixture-of-experts model through the experts that carry a
reasoning marker (RICE)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import typer

from steerable.cli.app import steer_app
from steerable.cli.common import Printing, generator, output_file
from steerable.cli.flags import command
from steerable.cli.steer import ArtifactOut, Layers
from steerable.config import opt
from steerable.errors import InputError
from steerable.lm.loading import ModelConfig


@dataclass(frozen=True)
class RiceFind:
    """Which experts to find, and how the artifact applies them."""

    corpus: str = opt(
        "builtin", "builtin (the built-in model's own sampled solutions) or JSONL with a 'text' per line.", min_len=1
    )
    n: int = opt(256, "Built-in corpus: training problems solved (sampled at T 1).", ge=1, le=100_000)
    marker: str = opt("check", "The text whose positions the experts are counted at.", min_len=1)
    offset: int = opt(0, "Count at the marker's first token moved by this many (-1: the token predicting it).",
                      ge=-16, le=16)  # fmt: skip
    k: int = opt(2, "Experts (layer, expert pairs) to boost: the paper's two.", ge=1, le=4096)
    pick: Literal["top", "random", "bottom"] = opt("top", "top nPMI (RICE), or a control: random, bottom.")
    beta: float = opt(4.0, "Default multiplier of the chosen experts' routing weights.", ge=0, le=1000)
    variant: Literal["after", "before"] = opt("after", "Boost after the top-k choice, or before it.")
    seed: int = opt(0, "Seed (corpus sampling, random experts).", ge=0, lt=2**32)


def _texts(find: RiceFind, gen) -> list[str]:
    if find.corpus == "builtin":
        from steerable.tasks.builtin.rice_eval import corpus

        return corpus(gen, find.n, find.seed)
    from steerable.tasks.loader import read_jsonl

    texts = []
    for n, row in read_jsonl(Path(find.corpus), "a 'text' field"):
        if not isinstance(row.get("text"), str):
            raise InputError(f'{find.corpus}:{n} has no \'text\' string: write {{"text": "..."}} per line')
        texts.append(row["text"])
    return texts


def find_rice(find: RiceFind, gen, layers_path: str | None):
    """Count nPMI over the corpus and pick the experts: the artifact, not yet saved."""
    from steerable.steer.fingerprint import fingerprint
    from steerable.steer.rice import Rice, expert_npmi, pick_experts, routers

    routers(gen.model, layers_path)  # a dense model is an error before any sampling
    texts = _texts(find, gen)
    npmi, counts = expert_npmi(gen.model, gen.tokenizer, texts, find.marker, find.offset, layers_path)
    import torch

    experts = pick_experts(npmi, find.pick, find.k, find.seed, routed=torch.tensor(counts["routed"]))
    info = {"marker": find.marker, "offset": find.offset, "corpus": find.corpus, "texts": len(texts),
            "pick": find.pick, "counts": counts}  # fmt: skip
    return Rice(experts, find.beta, find.variant, fingerprint(gen.model, gen.tokenizer, layers_path), npmi, info)


@command(steer_app, "rice")
def rice_cmd(find: RiceFind, target: ArtifactOut, model: ModelConfig, layers: Layers, printing: Printing) -> None:
    """Find the experts a reasoning marker is routed to (nPMI, per layer) and save the RICE artifact."""
    output_file(target.out)
    gen = generator(model.model, model.device, model.dtype)
    rice = find_rice(find, gen, layers.layers_path)
    path = rice.save(target.out)
    res = {"artifact": str(path), "experts": [list(p) for p in rice.experts],
           "npmi": [round(float(rice.npmi[p]), 4) for p in rice.experts], "markers": rice.info["counts"]["markers"],
           "positions": rice.info["counts"]["positions"], "beta": rice.beta, "variant": rice.variant}  # fmt: skip
    typer.echo(json.dumps(res) if printing.json else f"wrote {path}: " + json.dumps(res))


@dataclass(frozen=True)
class RiceEvalOptions:
    """What ``rice-eval`` sweeps and on how many problems."""

    artifact: Path | None = opt(None, "RICE artifact (default: find the experts first, as `steer rice`).")
    betas: tuple[float, ...] = opt((1.0, 2.0, 4.0, 8.0), "Comma-separated betas.", ge=0, le=1000, min_items=1)
    experts: tuple[str, ...] = opt(("top", "random", "bottom"), "Comma-separated: top, random, bottom.",
                                   min_items=1)  # fmt: skip
    variants: tuple[str, ...] = opt(("after", "before"), "Comma-separated: after, before.", min_items=1)
    n_free: int = opt(100, "Held-out medium problems solved freely (T 1) for the check rate.", ge=1, le=10_000)
    n_hard: int = opt(100, "Held-out hard problems solved greedily for the accuracy.", ge=1, le=10_000)
    n_benign: int = opt(64, "Benign requests (plain and wrapped) answered greedily.", ge=1, le=320)


@command(steer_app, "rice-eval")
def rice_eval_cmd(
    opts: RiceEvalOptions, find: RiceFind, model: ModelConfig = ModelConfig(model="builtin:moe"), *, layers: Layers,
    printing: Printing,
) -> None:  # fmt: skip
    """Check rate, hard accuracy and benign replies unchanged per expert choice, variant and beta (built-in)."""
    from steerable.errors import ConfigError
    from steerable.steer.artifact import load_steering
    from steerable.steer.rice import PICKS, VARIANTS, Rice
    from steerable.tasks.builtin.rice_eval import rice_eval

    for name, got, allowed in (("experts", opts.experts, PICKS), ("variants", opts.variants, VARIANTS)):
        bad = [x for x in got if x not in allowed]
        if bad:
            raise ConfigError(f"--{name} {', '.join(bad)}: use a comma list of {', '.join(allowed)}")
    gen = generator(model.model, model.device, model.dtype)
    if gen.tokenizer.get_vocab() != generator_vocab():
        raise InputError(f"rice-eval measures the built-in world: use --model builtin:moe (got {model.model!r})")
    if opts.artifact is not None:
        rice = load_steering(opts.artifact, gen.model, gen.tokenizer, layers.layers_path)
        if not isinstance(rice, Rice):
            raise InputError(f"{opts.artifact} is not a RICE artifact: make one with `steerable steer rice`")
    else:
        rice = find_rice(find, gen, layers.layers_path)
    show = lambda r: print(json.dumps(r), file=sys.stderr, flush=True)  # noqa: E731  (progress: a row at a time)
    rows = rice_eval(
        gen, rice, opts.betas, opts.experts, opts.variants, opts.n_free, opts.n_hard, opts.n_benign, find.seed, show
    )
    if printing.json:
        typer.echo(json.dumps({"rows": rows, "marker": rice.info.get("marker"), "npmi": _table(rice.npmi)}))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"RICE on {model.model}: {opts.n_free} free medium solutions (T 1), {opts.n_hard} hard (greedy)")
    for col in ("experts", "pairs (layer, expert)", "variant", "beta", "check rate", "hard accuracy",
                "benign unchanged"):  # fmt: skip
        t.add_column(col, justify="right")
    for r in rows:
        cells = (f"{r['check_rate']:.3f} ± {r['check_rate_se']:.3f}", f"{r['hard_accuracy']:.3f} ± "
                 f"{r['hard_accuracy_se']:.3f}", f"{r['benign_unchanged']:.2f}")  # fmt: skip
        t.add_row(r["experts"], str(r["pairs"]), r["variant"], f"{r['beta']:g}", *cells)
    Console().print(t)


def generator_vocab() -> dict:
    from steerable.tasks.builtin.tokenizer import build_tokenizer

    return build_tokenizer().get_vocab()


def _table(npmi) -> list[list[float | None]]:
    return [[None if v != v else round(float(v), 4) for v in row] for row in npmi.tolist()]
