"""Train the built-in process reward model: the policy's own surprise and a calculator, weighed on checker labels.

``steerable builtin train-prm --out DIR`` (1) samples the policy's solutions
to training problems at several temperatures (wrong steps are common at the
higher ones) and to held-out problems, (2) trains the calculator, a small
causal LM, on single arithmetic lines (:mod:`steerable.tasks.builtin.calculator`;
``--calc-steps 0`` leaves it out), (3) builds a
:class:`steerable.reward.surprise_prm.SurprisePRMForTokenClassification`
holding a copy of the policy and the calculator, (4) fits its head (seven
numbers; five without a calculator) by logistic regression on every line end
of the training solutions, labelled by the exact checker ("every line so far
is correct"), (5) measures step AUROC and ECE on the held-out evaluation
solutions and, per planted error kind (:mod:`steerable.tasks.builtin.prm_data`,
held-out problems), how often the wrong line scores below the right one;
everything goes to ``prm.json``.

Why not fine-tune a transformer as the classifier: the earlier built-in PRM
was the policy fine-tuned as a token classifier; it reached step AUROC 0.82
and learnt arithmetic consistency, not correctness, and 20-minute runs with
planted errors, dense token labels and surprise regression on two cores
stayed at chance on planted errors (0.4-0.6). The policy's own distribution
already separates them: a planted error is a token it would not write, and
the wrong steps it samples are mostly tokens it gave low probability. What
it writes confidently wrong, the calculator (99.98% of held-out lines right
after 5,000 steps) catches.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from steerable.config import check, opt
from steerable.errors import ConfigError
from steerable.lm.types import SamplingParams
from steerable.provenance import provenance
from steerable.reward.metrics import auroc, expected_calibration_error
from steerable.tasks.builtin import arithmetic
from steerable.tasks.builtin.evaluate import MAX_SOLUTION_TOKENS, generate_batched
from steerable.tasks.builtin.prm_data import KINDS, plant
from steerable.tasks.builtin.verifier import prefix_correct
from steerable.training import minute_lines

#: Seeds of the held-out problem sets (held-out problems never appear in training; these are apart from
#: ``builtin:SPLIT`` evaluation items, which use seed 0).
EVAL_SEED, PLANTED_SEED = 14, 15
#: Token classes of the built-in tokenizer (characters): digits and operators; every other token is a third class.
DIGITS, OPERATORS, NEWLINE = "0123456789", "+-*", "\n"


@dataclass(frozen=True)
class PRMTrainConfig:
    """How ``steerable builtin train-prm`` trains the built-in PRM (the CLI's flags are these fields)."""

    out: str = opt(..., "Directory to write the PRM to.")
    policy: str = opt("builtin", "Policy whose solutions are labelled and whose weights the PRM reads.")
    problems: int = opt(500, "Training problems the policy solves (1-8 operations, uniformly).", ge=10, le=1_000_000)
    temperatures: tuple[float, ...] = opt(
        (0.6, 0.8, 1.0, 1.2), "Sampling temperatures; every problem is solved once at each.", gt=0, le=4
    )
    solutions: str | None = opt(None, "Reuse the sampled solutions of an earlier run (its solutions.jsonl).")
    calc_steps: int = opt(
        5000,
        "Training steps of the calculator (0: none, the PRM reads only the policy's surprise).",
        ge=0,
        le=1_000_000,
    )
    calc_batch: int = opt(256, "Arithmetic lines per calculator step.", ge=1, le=65536)
    calc_width: int = opt(128, "The calculator's hidden size (3 layers, 4 heads).", ge=16, le=4096)
    calc_lr: float = opt(2e-3, "The calculator's peak learning rate (warm-up, then cosine to 0).", gt=0, le=1)
    iters: int = opt(200, "L-BFGS iterations of the head's logistic regression.", ge=1, le=10000)
    l2: float = opt(1e-4, "L2 penalty on the head's weights (not its bias).", ge=0)
    eval_problems: int = opt(
        300, "Held-out problems for each evaluation set (policy steps; planted errors).", ge=10, le=100_000
    )
    seed: int = opt(0, "Seed for problems, sampling and planting.", ge=0)
    device: str = opt("auto", "Sampling and scoring device: cpu, cuda, cuda:N or auto.")
    threads: int | None = opt(None, "torch threads (default: OMP_NUM_THREADS or every core).", ge=1)

    def __post_init__(self) -> None:
        check(self)
        if not self.temperatures:
            raise ConfigError("temperatures must name at least one temperature")
        if self.calc_width % 4:
            raise ConfigError(f"calc_width must be a multiple of 4 (the calculator's heads), got {self.calc_width}")


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
    """Training and evaluation solutions of the policy, sampled or read from ``cfg.solutions``."""
    if cfg.solutions:
        path = Path(cfg.solutions)
        if not path.exists():
            raise ConfigError(f"solutions: no file {path}: pass a solutions.jsonl written by an earlier train-prm")
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    from rich.progress import Progress

    rng = random.Random(f"prm-{cfg.seed}")
    sets = {
        "train": [arithmetic.train_problem(rng) for _ in range(cfg.problems)],
        "eval": arithmetic.eval_problems("all", cfg.eval_problems, seed=EVAL_SEED),
    }
    total = sum(len(v) for v in sets.values()) * len(cfg.temperatures)
    tick, done = minute_lines("train-prm: sample policy solutions", total, progress), 0
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("sample policy solutions", total=total)

        def advance(k: int) -> None:
            nonlocal done
            done += k
            bar.advance(task, k)
            tick(done)

        return [
            row
            for split, probs in sets.items()
            for row in sample_solutions(gen, probs, cfg.temperatures, cfg.seed, split, advance)
        ]


def planted_sets(n: int) -> dict[str, list]:
    """Held-out planted errors of every kind, on held-out problems (the same for every run)."""
    rng = random.Random(f"prm-planted-{PLANTED_SEED}")
    problems = arithmetic.eval_problems("all", 4 * n, seed=PLANTED_SEED)
    out = {}
    for kind in KINDS:
        found = (plant(rng, p, kind) for p in problems)
        out[kind] = [x for x in found if x is not None][:n]
    return out


def _collate(batch, pad_id: int):
    """Right-padded ids and mask, (row, token) positions of labelled line ends, and their labels."""
    width = max(len(e[0]) for e in batch)
    ids = torch.full((len(batch), width), pad_id)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    pos, lab = [], []
    for r, (toks, ends, flags) in enumerate(batch):
        ids[r, : len(toks)] = torch.tensor(toks)
        mask[r, : len(toks)] = 1
        pos.extend((r, e) for e in ends)
        lab.extend(float(f) for f in flags)
    return ids, mask, torch.tensor(pos), torch.tensor(lab)


# ---------------------------------------------------------------- model and measurement


def build_model(policy, tok, calculator=None):
    """A surprise PRM over a copy of ``policy`` (and ``calculator``), with the built-in tokenizer's digit and
    operator classes."""
    from steerable.reward.surprise_prm import from_policy

    def ids(chars: str) -> list[int]:
        out = [tok.convert_tokens_to_ids(c) for c in chars]
        if len(set(out)) != len(chars) or tok.unk_token_id in out or None in out:
            raise ConfigError(
                f"policy tokenizer has no single token for each of {chars!r}: the surprise PRM's token classes "
                "need a character-level tokenizer like the built-in one"
            )
        return out

    return from_policy(
        policy, [ids(DIGITS), ids(OPERATORS)], ids(NEWLINE)[0], calculator=calculator, equals_token_id=ids("=")[0]
    )


@torch.inference_mode()
def line_outputs(run, tok, pairs: list[tuple[str, str]], batch: int = 64) -> list[torch.Tensor]:
    """``run(ids, mask)``'s output ``[lines, k]`` at every line end of each ``(prompt, solution)``: what a search
    scores after each step."""
    exs = [line_end_labels(tok, p, s) for p, s in pairs]
    order = sorted(range(len(exs)), key=lambda i: len(exs[i][0]))
    out: list[torch.Tensor] = [torch.zeros(0) for _ in exs]
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        ids, mask, _, _ = _collate([exs[j] for j in idx], tok.pad_token_id)
        y = run(ids, mask).float().cpu()
        for r, j in enumerate(idx):
            out[j] = y[r, exs[j][1]]
    return out


def line_logits(model, tok, pairs: list[tuple[str, str]], batch: int = 64) -> list[list[float]]:
    """The PRM's logit at every line end of each ``(prompt, solution)``."""
    model.eval()
    dev = next(model.parameters()).device

    def run(ids, mask):
        return model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits[..., 0]

    return [z.tolist() for z in line_outputs(run, tok, pairs, batch)]


def step_features(model, tok, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[steps, n_features]`` features and checker labels at every line end of the policy solutions ``rows``."""
    model.eval()
    dev = next(model.parameters()).device
    pairs = [(r["prompt"], r["solution"]) for r in rows]
    feats = line_outputs(lambda ids, mask: model.features(ids.to(dev), mask.to(dev)), tok, pairs)
    labels = [f for (p, s), x in zip(pairs, feats, strict=True) for f in prefix_correct(p, s)[: len(x)]]
    return torch.cat(feats), torch.tensor(labels, dtype=torch.float)


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


def fit_head(x: torch.Tensor, y: torch.Tensor, l2: float, iters: int) -> tuple[torch.Tensor, float, int, float]:
    """Logistic regression ``sigmoid(w . x + b)`` on ``(x, y)`` by L-BFGS: ``(w, b, iterations, log loss)``.

    Minimises ``mean BCE + l2 * |w|^2``; the bias is not penalised.
    """
    x, y = x.double(), y.double()
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    solver = torch.optim.LBFGS([w], max_iter=iters, line_search_fn="strong_wolfe", tolerance_change=1e-12)

    def closure():
        solver.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w[:-1] + w[-1], y) + l2 * w[:-1].square().sum()
        loss.backward()
        return loss

    solver.step(closure)
    with torch.no_grad():
        loss = float(F.binary_cross_entropy_with_logits(x @ w[:-1] + w[-1], y))
    n = solver.state[solver._params[0]].get("n_iter", 0)
    w = w.detach()
    return w[:-1].float(), float(w[-1]), int(n), loss


# ---------------------------------------------------------------- training


def fit_calculator(cfg: PRMTrainConfig, tok, device, progress: bool):
    """Train the calculator (:mod:`steerable.tasks.builtin.calculator`) with a progress bar."""
    from rich.progress import Progress

    from steerable.tasks.builtin.calculator import train_calculator

    tick = minute_lines("train-prm: train the calculator: step", cfg.calc_steps, progress)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("train the calculator", total=cfg.calc_steps)

        def on_step(step: int, loss: float) -> None:
            bar.update(task, completed=step, description=f"train the calculator (loss {loss:.3f})")
            tick(step, f" (loss {loss:.3f})")

        return train_calculator(
            tok, cfg.calc_steps, cfg.calc_batch, cfg.calc_width, cfg.calc_lr, cfg.seed, device, on_step
        )


def train_prm(cfg: PRMTrainConfig, progress: bool = True) -> dict:
    from steerable.lm.local import LocalGenerator

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t_start = time.time()
    gen = LocalGenerator.from_pretrained(cfg.policy, device=cfg.device)
    tok = gen.tokenizer
    rows = policy_solutions(gen, cfg, progress)
    sample_seconds = time.time() - t_start
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "solutions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = [r for r in rows if r["split"] == "train"]
    evals = [r for r in rows if r["split"] == "eval"]
    if not train or not evals:
        raise ConfigError("solutions: need rows of split 'train' and 'eval' (a solutions.jsonl from train-prm)")
    sets = planted_sets(cfg.eval_problems)

    calc, calc_record = None, None
    if cfg.calc_steps:
        calc, calc_record = fit_calculator(cfg, tok, gen.device, progress)
    t0 = time.time()
    model = build_model(gen.model, tok, calc).to(gen.device)
    x, y = step_features(model, tok, train)
    w, b, iters, loss = fit_head(x, y, cfg.l2, cfg.iters)
    with torch.no_grad():
        model.score.weight.copy_(w[None])
        model.score.bias.fill_(b)
    fit_seconds = time.time() - t0
    final = measure(model, tok, evals, sets)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    record = {
        **provenance(cfg, "builtin train-prm"),
        "architecture": "steerable_surprise_prm (reward/surprise_prm.py): the policy's surprise"
        + (" and a calculator's score of each line" if calc is not None else "")
        + ", a linear head",
        "parameters": sum(p.numel() for p in model.parameters()),
        "fitted_parameters": model.score.weight.numel() + model.score.bias.numel(),
        "head": {**{f: round(float(v), 4) for f, v in zip(model.feature_names, w, strict=True)}, "bias": round(b, 4)},
        "calculator": calc_record,
        "policy_solutions": {s: sum(r["split"] == s for r in rows) for s in ("train", "eval")},
        "train_steps": len(y),
        "train_positive_share": round(float(y.mean()), 4),
        "train_log_loss": round(loss, 4),
        "lbfgs_iterations": iters,
        "planted_per_kind": {k: len(v) for k, v in sets.items()},
        **final,
        "sample_seconds": round(sample_seconds, 1),
        "fit_seconds": round(fit_seconds, 1),
    }
    (out / "prm.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
