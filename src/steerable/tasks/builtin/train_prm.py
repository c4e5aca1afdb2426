"""Train the built-in process reward model on the policy's own solutions.

``steerable builtin train-prm --out DIR`` samples solutions from the policy,
labels every line with the exact step checker (1 while every line so far is
correct), and fine-tunes a copy of the policy with a one-logit token
classification head, read at the last token of each line. Held-out solutions
give the step-level AUROC and calibration written to ``prm.json``.

The PRM is deliberately small and briefly trained: an oracle would leave search
nothing to learn from, so it should rank well but not perfectly.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from steerable.config import opt
from steerable.errors import ConfigError
from steerable.lm.types import SamplingParams
from steerable.reward.metrics import auroc, expected_calibration_error
from steerable.tasks.builtin import arithmetic
from steerable.tasks.builtin.evaluate import MAX_SOLUTION_TOKENS, generate_batched
from steerable.tasks.builtin.verifier import prefix_correct


@dataclass(frozen=True)
class PRMTrainConfig:
    """How ``steerable builtin train-prm`` trains the built-in PRM (the CLI's flags are these fields)."""

    out: str = opt(..., "Directory to write the PRM to.")
    policy: str = opt("builtin", "Policy whose solutions are labelled (and whose weights start the PRM).")
    problems: int = opt(3000, "Problems to sample solutions for.")
    samples: int = opt(2, "Solutions per problem.")
    temperature: float = opt(1.0, "Sampling temperature of the policy.")
    minutes: float = opt(5.0, "Training time budget (sampling not included).")
    epochs: int = opt(3, "Passes over the data at most.")
    lr: float = opt(3e-4, "Learning rate (AdamW).")
    batch_size: int = opt(32, "Solutions per step.")
    eval_share: float = opt(0.2, "Share of problems whose solutions are held out for AUROC and calibration.")
    seed: int = opt(0, "Seed.")
    device: str = opt("auto", "Sampling and training device: cpu, cuda, cuda:N or auto.")
    corrupt_share: float = opt(
        0.0, "Corrupted copies of training solutions to add, as a share of them (0.5 gave AUROC 0.78 vs 0.82)."
    )

    def __post_init__(self) -> None:
        if self.problems < 10:
            raise ConfigError(f"--problems must be >= 10 (got {self.problems})")
        if not 0 < self.eval_share < 1:
            raise ConfigError(f"--eval-share must be in (0, 1) (got {self.eval_share})")
        if self.minutes <= 0:
            raise ConfigError(f"--minutes must be > 0 (got {self.minutes})")


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


def corrupt_solution(rng: random.Random, solution: str) -> str | None:
    """The solution cut after a random computation line whose result is changed (by 1, 2, 10 or 100)."""
    lines = solution.split("\n")
    steps = [i for i, ln in enumerate(lines) if "=" in ln and not ln.startswith("check")]
    if not steps:
        return None
    k = rng.choice(steps)
    lhs, rhs = lines[k].rsplit("=", 1)
    if not rhs.strip().isdigit():
        return None
    value = int(rhs) + rng.choice([1, -1, 2, -2, 10, -10, 100, -100])
    if value < 0:
        value = int(rhs) + 1
    return "\n".join([*lines[:k], f"{lhs}={value}"]) + "\n"


def sample_solutions(gen, cfg: PRMTrainConfig, progress: bool) -> list[tuple[arithmetic.Problem, str]]:
    from rich.progress import Progress

    rng = random.Random(f"prm-{cfg.seed}")
    problems = [arithmetic.train_problem(rng) for _ in range(cfg.problems)]
    params = SamplingParams(
        temperature=cfg.temperature, n=cfg.samples, max_new_tokens=MAX_SOLUTION_TOKENS, seed=cfg.seed
    )
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("sample solutions", total=len(problems))
        comps = generate_batched(
            gen, [p.prompt for p in problems], params, batch_size=32, on_batch=lambda k: bar.advance(task, k)
        )
    return [(problems[c.prompt_index], c.text) for c in comps]


def train_prm(cfg: PRMTrainConfig, progress: bool = True) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from transformers import AutoModelForTokenClassification

    from steerable.lm.local import LocalGenerator

    torch.manual_seed(cfg.seed)
    t_start = time.time()
    gen = LocalGenerator.from_pretrained(cfg.policy, device=cfg.device)
    dev = gen.device
    data = sample_solutions(gen, cfg, progress)
    tok = gen.tokenizer
    examples = [line_end_labels(tok, p.prompt, s) for p, s in data]
    held = [p.prompt for p, _ in data]
    rng = random.Random(cfg.seed)
    prompts = sorted(set(held))
    rng.shuffle(prompts)
    eval_prompts = set(prompts[: int(len(prompts) * cfg.eval_share)])
    train_ex = [e for e, p in zip(examples, held, strict=True) if p not in eval_prompts and e[1]]
    eval_ex = [e for e, p in zip(examples, held, strict=True) if p in eval_prompts and e[1]]
    # the policy's own errors are few and subtle; corrupted copies of training solutions teach the head to
    # check arithmetic (evaluation stays on the policy's own, uncorrupted solutions)
    n_corrupt = int(cfg.corrupt_share * len(train_ex))
    train_data = [(p, sol) for p, sol in data if p.prompt not in eval_prompts]
    for p, sol in rng.sample(train_data, min(n_corrupt, len(train_data))):
        bad = corrupt_solution(rng, sol)
        if bad is not None:
            train_ex.append(line_end_labels(tok, p.prompt, bad))
    sample_seconds = time.time() - t_start

    policy_dir = gen.model.config._name_or_path
    model = AutoModelForTokenClassification.from_pretrained(policy_dir, num_labels=1).to(dev)
    model.config.id2label, model.config.label2id = {0: "on_correct_path"}, {"on_correct_path": 0}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    n_pos = sum(sum(e[2]) for e in train_ex)
    n_all = sum(len(e[2]) for e in train_ex)
    # wrong steps are rare; weight them up so the head does not learn "always fine"
    neg_weight = torch.tensor(max(1.0, n_pos / max(n_all - n_pos, 1)), device=dev)
    budget, t0, step = cfg.minutes * 60, time.time(), 0
    history: list[dict] = []
    total_steps = cfg.epochs * ((len(train_ex) + cfg.batch_size - 1) // cfg.batch_size)
    with Progress(
        TextColumn("[bold]train PRM"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total}"),
        TimeElapsedColumn(),
        disable=not progress,
    ) as bar:
        task = bar.add_task("prm", total=total_steps)
        model.train()
        for _ in range(cfg.epochs):
            rng.shuffle(train_ex)
            for i in range(0, len(train_ex), cfg.batch_size):
                if time.time() - t0 > budget:
                    break
                ids, mask, pos, lab = (t.to(dev) for t in _collate(train_ex[i : i + cfg.batch_size], tok.pad_token_id))
                logits = model(input_ids=ids, attention_mask=mask).logits[..., 0]
                picked = logits[pos[:, 0], pos[:, 1]]
                weight = torch.where(lab > 0.5, torch.ones_like(lab), neg_weight.expand_as(lab))
                loss = torch.nn.functional.binary_cross_entropy_with_logits(picked, lab, weight=weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                bar.update(task, completed=step)
            model.eval()
            sc, lb = _evaluate(model, eval_ex, tok.pad_token_id)
            history.append({"step": step, "step_auroc": round(auroc(sc, lb), 4)})
            model.train()
    model.eval()
    # weighting negatives by w shifts the optimal logit by -log(w); undo it so scores stay calibrated
    with torch.no_grad():
        model.score.bias += torch.log(neg_weight)
    scores, labels = _evaluate(model, eval_ex, tok.pad_token_id)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    record = {
        "command": "steerable " + " ".join(sys.argv[1:]) if sys.argv[1:3] == ["builtin", "train-prm"] else "",
        "config": asdict(cfg),
        "train_solutions": len(train_ex),
        "eval_solutions": len(eval_ex),
        "eval_steps": len(labels),
        "eval_positive_share": round(sum(labels) / max(len(labels), 1), 4),
        "step_auroc": round(auroc(scores, labels), 4),
        "ece": round(expected_calibration_error(scores, labels), 4),
        "optimizer_steps": step,
        "history": history,
        "sample_seconds": round(sample_seconds, 1),
        "train_seconds": round(time.time() - t0, 1),
    }
    (out / "prm.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _collate(batch, pad_id: int):
    """Right-padded ids and mask, plus (row, token) positions of labelled line ends and their labels."""
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


@torch.inference_mode()
def _evaluate(model, examples, pad_id: int) -> tuple[list[float], list[bool]]:
    scores, labels = [], []
    for i in range(0, len(examples), 64):
        dev = next(model.parameters()).device
        ids, mask, pos, lab = (t.to(dev) for t in _collate(examples[i : i + 64], pad_id))
        logits = model(input_ids=ids, attention_mask=mask).logits[..., 0]
        scores.extend(torch.sigmoid(logits[pos[:, 0], pos[:, 1]]).tolist())
        labels.extend(bool(x) for x in lab.tolist())
    return scores, labels
