"""Train the built-in model from scratch: a plain torch loop, nanoGPT-style.

``steerable builtin train --out DIR --minutes N --seed S`` runs this and writes
a normal ``transformers`` model directory plus ``training.json`` (command,
seed, steps, wall time). With ``--steps`` the run is exactly reproducible on
the same machine and torch version; with only ``--minutes`` the number of
steps depends on the machine's speed and is recorded.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from steerable.config import opt
from steerable.errors import ConfigError
from steerable.provenance import provenance
from steerable.tasks.builtin.data import training_pair

#: A typical completion length of the mixture, the loss's fixed normaliser.
TOKENS_PER_EXAMPLE = 64


@dataclass(frozen=True)
class TrainConfig:
    """How ``steerable builtin train`` trains the built-in model (the CLI's flags are these fields)."""

    out: str = opt(..., "Directory to write the model to.")
    minutes: float = opt(20.0, "Wall-time budget; the LR schedule spans it.")
    steps: int | None = opt(None, "Exact number of steps (reproducible); overrides --minutes.")
    seed: int = opt(0, "Seed for data and initialisation.")
    batch_size: int = opt(64, "Sequences per step.")
    lr: float = opt(2e-3, "Peak learning rate (AdamW, betas 0.9/0.98).")
    min_lr: float = opt(1e-4, "Learning rate at the end of the cosine schedule.")
    warmup: int = opt(100, "Linear warm-up steps.")
    weight_decay: float = opt(0.1, "AdamW weight decay on matrices.")
    threads: int | None = opt(None, "torch threads (default: OMP_NUM_THREADS or every core).")
    eval_every: int = opt(250, "Steps between dev-accuracy checks, logged in training.json (0: none).")
    # the built-in model is meant to be imperfect on hard problems so that search has room to help
    stop_at_hard: float | None = opt(
        None, "Stop at the first dev check with hard accuracy >= this (and easy >= --min-easy)."
    )
    min_easy: float = opt(0.9, "Easy accuracy the early stop also needs.")
    dev_size: int = opt(64, "Dev problems per split.")

    def __post_init__(self) -> None:
        if self.minutes <= 0 and self.steps is None:
            raise ConfigError(f"--minutes must be > 0 (got {self.minutes}), or give --steps")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps must be >= 1 (got {self.steps})")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1 (got {self.batch_size})")


def batches(rng: random.Random, tokenizer, batch_size: int, group: int = 4):
    """Endless right-padded ``(input_ids, attention_mask, labels)``; loss only on completions and EOS.

    Draws ``group`` batches' worth of examples at once and batches them by
    length, which cuts padding by about half on this mixture.
    """
    while True:
        examples = []
        for _ in range(batch_size * group):
            prompt, completion = training_pair(rng)
            p = tokenizer(prompt)["input_ids"]
            c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            examples.append((p + c, [-100] * len(p) + c))
        examples.sort(key=lambda e: len(e[0]))
        chunks = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield collate(chunk, tokenizer.pad_token_id)


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    rows = [e[0] for e in examples]
    labels = [e[1] for e in examples]
    batch_size = len(rows)
    width = max(map(len, rows))
    ids = torch.full((batch_size, width), pad_id)
    mask = torch.zeros((batch_size, width), dtype=torch.long)
    lab = torch.full((batch_size, width), -100)
    for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        lab[i, : len(lb)] = torch.tensor(lb)
    return ids, mask, lab


def dev_accuracy(model, tokenizer, n: int = 32) -> dict[str, float]:
    """Greedy accuracy on ``n`` dev problems per split (held-out problems, seeds apart from the test set's)."""
    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.tasks.builtin.arithmetic import SPLITS, eval_problems
    from steerable.tasks.builtin.verifier import is_correct

    model.eval()
    gen = LocalGenerator(model, tokenizer)
    out = {}
    for split in SPLITS:
        problems = eval_problems(split, n, seed=1000)
        comps = gen.generate([p.prompt for p in problems], SamplingParams(temperature=0.0, max_new_tokens=320))
        out[f"dev_{split}"] = round(sum(is_correct(p, c.text) for p, c in zip(problems, comps, strict=True)) / n, 3)
    return out


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from transformers import LlamaForCausalLM

    from steerable.lm.builtin import model_config
    from steerable.tasks.builtin.tokenizer import build_tokenizer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tok = build_tokenizer()
    model = LlamaForCausalLM(model_config(len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    budget_s = cfg.minutes * 60
    data = batches(rng, tok, cfg.batch_size)
    progress_visible = progress and sys.stderr.isatty()
    start, step, ema = time.time(), 0, None
    history: list[dict] = []
    stopped_at = None

    def progress_fraction() -> float:
        if cfg.steps is not None:
            return step / cfg.steps
        return (time.time() - start) / budget_s

    with Progress(
        TextColumn("[bold]train built-in"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% step {task.fields[step]} loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        disable=not progress,
    ) as bar:
        task = bar.add_task("train", total=1.0, step=0, loss="-")
        model.train()
        while (frac := progress_fraction()) < 1.0:
            # linear warmup, then cosine decay over the budget (steps or wall time)
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
            lr = min(lr, cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac)))
            for group in opt.param_groups:
                group["lr"] = lr
            ids, mask, labels = next(data)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            # summed over tokens and divided by a fixed count, not by this batch's token count: batches are
            # grouped by length, and a per-batch mean would give tokens of long examples less weight
            # (the model then under-learns choices made once per example, such as the solution style)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
            ) / (cfg.batch_size * TOKENS_PER_EXAMPLE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            bar.update(task, completed=min(frac, 1.0), step=step, loss=f"{ema:.4f}")
            if not progress_visible and step % 100 == 0:
                print(f"step {step} loss {ema:.4f} lr {lr:.2e} {time.time() - start:.0f}s", file=sys.stderr, flush=True)
            if cfg.eval_every and step % cfg.eval_every == 0:
                history.append(
                    {
                        "step": step,
                        "seconds": round(time.time() - start),
                        "loss": round(ema, 4),
                        **dev_accuracy(model, tok, cfg.dev_size),
                    }
                )
                if progress_visible:
                    bar.console.print(history[-1])
                else:
                    print(history[-1], file=sys.stderr, flush=True)
                model.train()
                dev = history[-1]
                if (
                    cfg.stop_at_hard is not None
                    and dev["dev_hard"] >= cfg.stop_at_hard
                    and dev["dev_easy"] >= cfg.min_easy
                ):
                    stopped_at = step
                    break

    wall = time.time() - start
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    record = {
        **provenance(cfg, "builtin train", unused=("minutes",) if cfg.steps else ()),
        "steps": step,
        "wall_seconds": round(wall, 1),
        "final_loss_ema": round(ema or float("nan"), 5),
        "stopped_early_at_step": stopped_at,
        "final_dev_accuracy": (history[-1] if stopped_at else dev_accuracy(model, tok, cfg.dev_size))
        if cfg.eval_every
        else None,
        "history": history,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
