"""Train the built-in process reward model: policy solutions and planted errors, every line labelled by the checker.

``steerable builtin train-prm --out DIR`` (1) samples the policy's solutions to
training problems at several temperatures, (2) trains a token classifier
that starts as a copy of the policy (optionally deeper: new layers start as
the identity) on a stream mixing those solutions with synthetic ones that
carry one planted error each and continue consistently from it
(:mod:`steerable.tasks.builtin.prm_data`), labelled at every line end with
"every line so far is correct", (3) fits a Platt scale on held-out policy
steps (the planted errors make the training mix more negative than the
policy's own samples) and folds it into the head, (4) measures step AUROC and
ECE on other held-out policy solutions and, per planted kind, how often the
wrong line scores below the right one; everything goes to ``prm.json``.

Why a copy of the policy: judging a line needs the problem's next operation
and the running value (which the policy computes to write the line) and the
line's arithmetic (which the policy computes digit by digit); a copy starts
with those circuits, a fresh model must learn them in minutes on two cores.
"""

from __future__ import annotations

import json
import math
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from steerable.config import check, opt
from steerable.errors import ConfigError
from steerable.lm.types import SamplingParams
from steerable.reward.metrics import auroc, expected_calibration_error
from steerable.tasks.builtin import arithmetic
from steerable.tasks.builtin.evaluate import MAX_SOLUTION_TOKENS, generate_batched
from steerable.tasks.builtin.prm_data import KINDS, char_labels, plant
from steerable.tasks.builtin.verifier import prefix_correct

#: Seeds of the held-out problem sets (held-out problems never appear in training; these are apart from
#: ``builtin:SPLIT`` evaluation items, which use seed 0).
CALIB_SEED, EVAL_SEED, PLANTED_SEED = 13, 14, 15


@dataclass(frozen=True)
class PRMTrainConfig:
    """How ``steerable builtin train-prm`` trains the built-in PRM (the CLI's flags are these fields)."""

    out: str = opt(..., "Directory to write the PRM to.")
    policy: str = opt("builtin", "Policy whose solutions are labelled and whose weights start the PRM.")
    extra_layers: int = opt(0, "Layers added on top of the policy's (they start as the identity).", ge=0, le=12)
    problems: int = opt(4000, "Training problems the policy solves (1-8 operations, uniformly).", ge=10)
    temperatures: tuple[float, ...] = opt(
        (0.6, 0.8, 1.0, 1.2), "Sampling temperatures; every problem is solved once at each.", gt=0, le=4
    )
    solutions: str | None = opt(None, "Reuse the sampled solutions of an earlier run (its solutions.jsonl).")
    planted_share: float = opt(
        0.5, "Share of each batch drawn from synthetic solutions (correct or planted).", ge=0, le=1
    )
    correct_share: float = opt(0.3, "Share of synthetic solutions left correct (the rest carry one error).", ge=0, le=1)
    token_loss: float = opt(
        1.0,
        "Weight of the per-token loss (can the text so far still start a right solution?) beside the line ends'.",
        ge=0,
    )
    surprise_loss: float = opt(
        1.0, "Weight of regressing the policy's -log p of each token (a second output, dropped when saving).", ge=0
    )
    steps: int | None = opt(None, "Exact number of optimiser steps (reproducible); overrides --minutes.", ge=1)
    minutes: float = opt(25.0, "Training wall-time budget (sampling and evaluation not included).", gt=0)
    batch_size: int = opt(32, "Solutions per step.", ge=1)
    lr: float = opt(1e-3, "Peak learning rate (AdamW); the head and new layers, the copied layers get --base-lr.", gt=0)
    base_lr: float = opt(3e-4, "Peak learning rate of the layers copied from the policy.", ge=0)
    min_lr_ratio: float = opt(0.1, "Learning rate at the end of the cosine schedule, as a share of the peak.", ge=0)
    warmup: int = opt(50, "Linear warm-up steps.", ge=0)
    weight_decay: float = opt(0.01, "AdamW weight decay on matrices.", ge=0)
    eval_problems: int = opt(300, "Held-out problems for each evaluation set (policy steps; planted errors).", ge=10)
    eval_every: int = opt(200, "Steps between quick held-out checks logged in prm.json (0: none).", ge=0)
    seed: int = opt(0, "Seed for problems, sampling, planting and initialisation.", ge=0)
    device: str = opt("auto", "Sampling and training device: cpu, cuda, cuda:N or auto.")
    threads: int | None = opt(None, "torch threads (default: OMP_NUM_THREADS or every core).", ge=1)

    def __post_init__(self) -> None:
        check(self)
        if not self.temperatures:
            raise ConfigError("temperatures must name at least one temperature")


# ---------------------------------------------------------------- data


def line_end_labels(tokenizer, prompt: str, solution: str) -> tuple[list[int], list[int], list[bool]]:
    """Token ids of ``prompt + solution``, the token index ending each line, and its label."""
    text = prompt + solution
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    flags = prefix_correct(prompt, solution)
    ends, pos = [], len(prompt)
    for line in solution.split("\n"):
        if line.strip():
            end_char = pos + len(line)  # the newline after the line, or its last char at the end
            end_char = min(end_char, len(text) - 1)
            tok = next((i for i, (a, b) in enumerate(offsets) if a <= end_char < b), len(ids) - 1)
            ends.append(tok)
        pos += len(line) + 1
    return ids, ends[: len(flags)], flags[: len(ends)]


def encode(tokenizer, prompt: str, solution: str) -> tuple[list[int], list[int], list[bool], list[int]]:
    """:func:`line_end_labels` plus a dense label for every token (-1 in the prompt): :func:`char_labels` of its
    last character."""
    ids, ends, flags = line_end_labels(tokenizer, prompt, solution)
    problem = arithmetic.parse_problem(prompt)
    chars = char_labels(problem, solution) if problem is not None else [False] * len(solution)
    offsets = tokenizer(prompt + solution, return_offsets_mapping=True)["offset_mapping"]
    dense = [int(chars[b - 1 - len(prompt)]) if b > len(prompt) and b > a else -1 for a, b in offsets]
    return ids, ends, flags, dense


def sample_solutions(gen, problems: list[arithmetic.Problem], temps, seed: int, split: str, progress) -> list[dict]:
    """The policy's solutions to ``problems`` at every temperature, as JSON rows."""
    rows = []
    for t in temps:
        params = SamplingParams(temperature=t, max_new_tokens=MAX_SOLUTION_TOKENS, seed=seed)
        comps = generate_batched(gen, [p.prompt for p in problems], params, batch_size=64, on_batch=progress)
        rows += [
            {"split": split, "temperature": t, "prompt": problems[c.prompt_index].prompt, "solution": c.text}
            for c in comps
        ]
    return rows


def policy_solutions(gen, cfg: PRMTrainConfig, progress: bool) -> list[dict]:
    """Training, calibration and evaluation solutions of the policy, sampled or read from ``cfg.solutions``."""
    if cfg.solutions:
        path = Path(cfg.solutions)
        if not path.exists():
            raise ConfigError(f"solutions: no file {path}: pass a solutions.jsonl written by an earlier train-prm")
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    from rich.progress import Progress

    rng = random.Random(f"prm-{cfg.seed}")
    sets = {
        "train": [arithmetic.train_problem(rng) for _ in range(cfg.problems)],
        "calib": arithmetic.eval_problems("all", cfg.eval_problems, seed=CALIB_SEED),
        "eval": arithmetic.eval_problems("all", cfg.eval_problems, seed=EVAL_SEED),
    }
    total = sum(len(v) for v in sets.values()) * len(cfg.temperatures)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("sample policy solutions", total=total)
        return [
            row
            for split, probs in sets.items()
            for row in sample_solutions(gen, probs, cfg.temperatures, cfg.seed, split, lambda k: bar.advance(task, k))
        ]


def synthetic(rng: random.Random, cfg: PRMTrainConfig) -> tuple[str, str]:
    """One synthetic training solution: correct (either style) or with one planted error of a random kind."""
    while True:
        p = arithmetic.train_problem(rng)
        if rng.random() < cfg.correct_share:
            return p.prompt, p.solution("verbose" if rng.random() < 0.5 else "concise")
        planted = plant(rng, p, rng.choice(KINDS))
        if planted is not None:
            return planted.prompt, planted.solution


def planted_sets(n: int) -> dict[str, list]:
    """Held-out planted errors of every kind, on held-out problems (the same for every run)."""
    rng = random.Random(f"prm-planted-{PLANTED_SEED}")
    problems = arithmetic.eval_problems("all", 4 * n, seed=PLANTED_SEED)
    out = {}
    for kind in KINDS:
        found = (plant(rng, p, kind) for p in problems)
        out[kind] = [x for x in found if x is not None][:n]
    return out


def batches(rng: random.Random, tok, pool: list[tuple[str, str]], cfg: PRMTrainConfig, group: int = 8):
    """Endless ``(ids, mask, positions, labels)`` batches mixing policy solutions and synthetic ones."""
    while True:
        examples = []
        for _ in range(cfg.batch_size * group):
            prompt, sol = synthetic(rng, cfg) if rng.random() < cfg.planted_share or not pool else rng.choice(pool)
            ex = encode(tok, prompt, sol)
            if ex[1]:
                examples.append(ex)
        examples.sort(key=lambda e: len(e[0]))  # batches of similar length: less padding
        chunks = [examples[i : i + cfg.batch_size] for i in range(0, len(examples), cfg.batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield _collate(chunk, tok.pad_token_id)


def _collate(batch, pad_id: int):
    """Right-padded ids and mask, (row, token) positions of labelled line ends and their labels, and the dense
    token labels (-1: none) when the examples carry them."""
    width = max(len(e[0]) for e in batch)
    ids = torch.full((len(batch), width), pad_id)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    dense = torch.full((len(batch), width), -1.0)
    pos, lab = [], []
    for r, (toks, ends, flags, *rest) in enumerate(batch):
        ids[r, : len(toks)] = torch.tensor(toks)
        mask[r, : len(toks)] = 1
        if rest:
            dense[r, : len(toks)] = torch.tensor(rest[0], dtype=torch.float)
        pos.extend((r, e) for e in ends)
        lab.extend(float(f) for f in flags)
    return ids, mask, torch.tensor(pos), torch.tensor(lab), dense


# ---------------------------------------------------------------- model and measurement


def build_model(policy_dir: str, extra_layers: int, labels: int = 1):
    """A token classifier holding the policy's weights, ``extra_layers`` identity layers on top.

    Label 0 is the PRM's ("on a correct path"); a second label, when asked
    for, is the training-time regression of the policy's surprise at each
    token (:func:`drop_extra_labels` removes it before saving).
    """
    from transformers import AutoConfig, AutoModelForTokenClassification

    conf = AutoConfig.from_pretrained(policy_dir)
    base = conf.num_hidden_layers
    conf.num_hidden_layers = base + extra_layers
    conf.num_labels, conf.classifier_dropout = labels, 0.0
    conf.id2label = {0: "on_correct_path", **({1: "policy_surprise"} if labels > 1 else {})}
    conf.label2id = {v: k for k, v in conf.id2label.items()}
    model = AutoModelForTokenClassification.from_pretrained(policy_dir, config=conf)
    with torch.no_grad():
        for layer in model.model.layers[base:]:  # a residual block whose outputs are zero is the identity
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return model, base


def drop_extra_labels(model) -> None:
    """Keep only label 0 (what a PRM scorer reads): a one-label token classifier like any other."""
    old = model.score
    head = torch.nn.Linear(old.in_features, 1, bias=old.bias is not None).to(old.weight.device)
    with torch.no_grad():
        head.weight.copy_(old.weight[:1])
        if old.bias is not None:
            head.bias.copy_(old.bias[:1])
    model.score = head
    model.num_labels = model.config.num_labels = 1
    model.config.id2label, model.config.label2id = {0: "on_correct_path"}, {"on_correct_path": 0}


def surprise(policy, ids: torch.Tensor, mask: torch.Tensor, cap: float = 8.0) -> torch.Tensor:
    """``-log p(token | tokens before it)`` under the policy, capped at ``cap`` and divided by it: ``[batch, seq]``.

    Where the policy would not have written a token is where an error is, so
    regressing this at every token teaches the PRM to compare what the
    policy's circuits predict with what is written (the PRM starts as the
    policy and keeps its predictions in its residual stream).
    """
    with torch.no_grad():
        logp = policy(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        out = torch.zeros(ids.shape, device=ids.device)
        out[:, 1:] = -logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    return out.clamp(max=cap) / cap


@torch.inference_mode()
def line_logits(model, tok, pairs: list[tuple[str, str]], batch: int = 64) -> list[list[float]]:
    """The head's logit at every line end of each ``(prompt, solution)``: what a search scores after each step."""
    model.eval()
    dev = next(model.parameters()).device
    exs = [line_end_labels(tok, p, s) for p, s in pairs]
    order = sorted(range(len(exs)), key=lambda i: len(exs[i][0]))
    out: list[list[float]] = [[] for _ in exs]
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        ids, mask, pos, _, _ = _collate([exs[j] for j in idx], tok.pad_token_id)
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits[..., 0].float().cpu()
        for r, j in enumerate(idx):
            out[j] = [float(logits[r, e]) for e in exs[j][1]]
    return out


def step_logits(model, tok, rows: list[dict]) -> tuple[list[float], list[bool]]:
    """Logits and checker labels of every step of the policy solutions ``rows``."""
    pairs = [(r["prompt"], r["solution"]) for r in rows]
    logits, labels = [], []
    for (p, s), z in zip(pairs, line_logits(model, tok, pairs), strict=True):
        logits += z
        labels += prefix_correct(p, s)[: len(z)]
    return logits, labels


def detection(model, tok, sets: dict[str, list]) -> dict[str, dict[str, float]]:
    """Per kind: how often the wrong line scores below the right one (``at_line``), and the finished solution
    below the correct one (``at_end``)."""
    items = [(kind, x) for kind, xs in sets.items() for x in xs]
    logits = line_logits(model, tok, [(x.prompt, t) for _, x in items for t in (x.solution, x.correct)])
    hits: dict[str, list[tuple[bool, bool]]] = {kind: [] for kind in sets}
    for k, (kind, x) in enumerate(items):
        bad, good = logits[2 * k], logits[2 * k + 1]
        hits[kind].append((bad[x.line] < good[x.line], bad[-1] < good[-1]))
    return {
        kind: {
            "at_line": round(sum(h[0] for h in hs) / len(hs), 4),
            "at_end": round(sum(h[1] for h in hs) / len(hs), 4),
        }
        for kind, hs in hits.items()
        if hs
    }


def platt(logits: list[float], labels: list[bool], iters: int = 200) -> tuple[float, float]:
    """``(a, b)`` minimising the log loss of sigmoid(a z + b) (Platt scaling), by L-BFGS."""
    z, y = torch.tensor(logits, dtype=torch.float64), torch.tensor(labels, dtype=torch.float64)
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    solver = torch.optim.LBFGS([ab], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        solver.zero_grad()
        loss = F.binary_cross_entropy_with_logits(ab[0] * z + ab[1], y)
        loss.backward()
        return loss

    solver.step(closure)
    return float(ab[0].detach()), float(ab[1].detach())


def measure(model, tok, eval_rows: list[dict], sets: dict[str, list]) -> dict:
    logits, labels = step_logits(model, tok, eval_rows)
    scores = torch.sigmoid(torch.tensor(logits)).tolist()
    return {
        "eval_steps": len(labels),
        "eval_positive_share": round(sum(labels) / max(len(labels), 1), 4),
        "step_auroc": round(auroc(scores, labels), 4),
        "ece": round(expected_calibration_error(scores, labels), 4),
        "detection": detection(model, tok, sets),
    }


# ---------------------------------------------------------------- training


def train_prm(cfg: PRMTrainConfig, progress: bool = True) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from steerable.lm.local import LocalGenerator

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t_start = time.time()
    gen = LocalGenerator.from_pretrained(cfg.policy, device=cfg.device)
    dev, tok = gen.device, gen.tokenizer
    rows = policy_solutions(gen, cfg, progress)
    sample_seconds = time.time() - t_start
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "solutions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool = [(r["prompt"], r["solution"]) for r in rows if r["split"] == "train"]
    calib = [r for r in rows if r["split"] == "calib"]
    evals = [r for r in rows if r["split"] == "eval"]
    sets = planted_sets(cfg.eval_problems)
    quick_sets = {k: v[:60] for k, v in sets.items()}

    policy_dir = gen.model.config._name_or_path
    model, base = build_model(policy_dir, cfg.extra_layers, labels=2 if cfg.surprise_loss else 1)
    model.to(dev)
    policy = gen.model.eval()
    copied = {id(p) for layer in model.model.layers[:base] for p in layer.parameters()}
    copied |= {id(p) for p in model.model.embed_tokens.parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        groups.setdefault((id(p) in copied, p.dim() >= 2), []).append(p)
    optim = torch.optim.AdamW(
        [
            {"params": ps, "peak": cfg.base_lr if is_copied else cfg.lr, "weight_decay": cfg.weight_decay * is_matrix}
            for (is_copied, is_matrix), ps in groups.items()
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    rng = random.Random(cfg.seed)
    data = batches(rng, tok, pool, cfg)
    budget_s, history, step, ema = cfg.minutes * 60, [], 0, None
    t0 = time.time()
    eval_seconds = 0.0

    def fraction() -> float:
        return step / cfg.steps if cfg.steps is not None else (time.time() - t0 - eval_seconds) / budget_s

    with Progress(
        TextColumn("[bold]train PRM"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% step {task.fields[step]} loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        disable=not progress,
    ) as bar:
        task = bar.add_task("prm", total=1.0, step=0, loss="-")
        model.train()
        while (frac := fraction()) < 1.0:
            # linear warm-up, then cosine decay to min_lr_ratio of the peak over the budget (steps or time)
            scale = min(1.0, (step + 1) / max(cfg.warmup, 1))
            scale = min(scale, cfg.min_lr_ratio + 0.5 * (1 - cfg.min_lr_ratio) * (1 + math.cos(math.pi * frac)))
            for group in optim.param_groups:
                group["lr"] = group["peak"] * scale
            ids, mask, pos, lab, dense = (t.to(dev) for t in next(data))
            heads = model(input_ids=ids, attention_mask=mask).logits
            logits = heads[..., 0]
            loss = F.binary_cross_entropy_with_logits(logits[pos[:, 0], pos[:, 1]], lab)
            if cfg.token_loss:  # every token of the solution: "still a possible start of a right solution"
                seen = dense >= 0
                loss = loss + cfg.token_loss * F.binary_cross_entropy_with_logits(logits[seen], dense[seen])
            if cfg.surprise_loss:
                seen = dense >= 0
                target = surprise(policy, ids, mask)
                aux = heads[..., 1]
                loss = loss + cfg.surprise_loss * F.mse_loss(aux[seen], target[seen])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            step += 1
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            bar.update(task, completed=min(frac, 1.0), step=step, loss=f"{ema:.4f}")
            if cfg.eval_every and step % cfg.eval_every == 0:
                t_eval = time.time()
                quick = measure(model, tok, evals[:: len(evals) // 240 or 1], quick_sets)
                history.append({"step": step, "seconds": round(time.time() - t0), "loss": round(ema, 4), **quick})
                print(json.dumps(history[-1]), file=sys.stderr, flush=True)
                model.train()
                eval_seconds += time.time() - t_eval
    train_seconds = time.time() - t0 - eval_seconds
    model.eval()
    drop_extra_labels(model)
    a, b = platt(*step_logits(model, tok, calib))
    with torch.no_grad():  # sigmoid(a z + b): fold the Platt scale into the head
        model.score.weight *= a
        model.score.bias.mul_(a).add_(b)
    final = measure(model, tok, evals, sets)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    record = {
        "command": "steerable " + " ".join(sys.argv[1:]) if sys.argv[1:3] == ["builtin", "train-prm"] else "",
        "config": asdict(cfg),
        "parameters": n_params,
        "layers": model.config.num_hidden_layers,
        "policy_solutions": {s: sum(r["split"] == s for r in rows) for s in ("train", "calib", "eval")},
        "planted_per_kind": {k: len(v) for k, v in sets.items()},
        "platt": {"a": round(a, 4), "b": round(b, 4)},
        **final,
        "optimizer_steps": step,
        "final_loss_ema": round(ema or float("nan"), 4),
        "history": history,
        "sample_seconds": round(sample_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }
    (out / "prm.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
