"""Train the built-in model from scratch: nanoGPT's loop (:func:`steerable.training.train_loop`).

``steerable builtin train --out DIR --minutes N --seed S`` runs this and writes
a normal ``transformers`` model directory plus ``training.json`` (command,
seed, steps, wall time). With ``--steps`` the run is exactly reproducible on
the same machine and torch version; with only ``--minutes`` the number of
steps depends on the machine's speed and is recorded. A checkpoint in DIR
(every minute and on Ctrl-C) lets a rerun of the same command resume.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from steerable.config import opt
from steerable.errors import ConfigError
from steerable.provenance import provenance
from steerable.tasks.builtin.data import OPS_WEIGHTS, training_pair
from steerable.training import CHECKPOINT, Budget, Run, train_loop, warmup_cosine

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
    arch: Literal["llama", "moe"] = opt("llama", "llama (builtin) or moe (builtin:moe, a Qwen3-MoE for RICE).")
    corrections: float = opt(0.0, "Share of verbose solutions with one slip caught by its check and mended "
                             "(builtin:moe: 0.05; the slip itself carries no loss).", ge=0, le=1)  # fmt: skip

    def __post_init__(self) -> None:
        if self.minutes <= 0 and self.steps is None:
            raise ConfigError(f"--minutes must be > 0 (got {self.minutes}), or give --steps")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps must be >= 1 (got {self.steps})")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1 (got {self.batch_size})")
        if self.arch not in ("llama", "moe"):
            raise ConfigError(f"--arch must be llama or moe (got {self.arch!r})")
        if not 0 <= self.corrections <= 1:
            raise ConfigError(f"--corrections must be a share in [0, 1] (got {self.corrections})")


class Batches:
    """Endless right-padded ``(input_ids, attention_mask, labels)`` of ``example(rng, tokenizer)``, by default
    the arithmetic mixture (loss only on completions and EOS).

    Draws ``group`` batches' worth of examples at once and batches them by
    length, which cuts padding by about half on this mixture. Its
    ``state_dict`` (the random state its group was drawn from, and how many
    of the group's batches were taken) lets a resumed run draw the batches an
    uninterrupted one would have.
    """

    def __init__(
        self,
        rng: random.Random,
        tokenizer,
        batch_size: int,
        group: int = 4,
        example: Callable[[random.Random, Any], tuple[list[int], list[int]]] | None = None,
    ) -> None:
        self.rng, self.tokenizer, self.batch_size, self.group = rng, tokenizer, batch_size, group
        self.example = example or arithmetic_example
        self.drawn_from, self.taken, self.chunks = rng.getstate(), 0, []

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        if self.taken == len(self.chunks):
            self._draw()
        self.taken += 1
        return collate(self.chunks[self.taken - 1], self.tokenizer.pad_token_id)

    def _draw(self) -> None:
        self.drawn_from, self.taken = self.rng.getstate(), 0
        examples = []
        for _ in range(self.batch_size * self.group):
            examples.append(self.example(self.rng, self.tokenizer))
        examples.sort(key=lambda e: len(e[0]))
        self.chunks = [examples[i : i + self.batch_size] for i in range(0, len(examples), self.batch_size)]
        self.rng.shuffle(self.chunks)

    def state_dict(self) -> dict:
        return {"rng": self.drawn_from, "taken": self.taken}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(state["rng"])
        self._draw()
        self.taken = state["taken"]


def corrected_example(corrections: float):
    """The mixture's examples where a share ``corrections`` of the verbose solutions slips once and mends it
    (:meth:`~steerable.tasks.builtin.arithmetic.Problem.corrected_solution`); 0 is :func:`arithmetic_example`."""
    from steerable.tasks.builtin import arithmetic

    def example(rng: random.Random, tokenizer) -> tuple[list[int], list[int]]:
        if rng.random() >= corrections:
            return arithmetic_example(rng, tokenizer)
        n_ops = rng.choices(range(1, 9), weights=OPS_WEIGHTS)[0]
        p = arithmetic.train_problem(rng, n_ops, n_ops)
        at = rng.randrange(p.n_ops)
        right = p.steps[at].result
        wrong = right + rng.choice((1, 2, 10, -1, -2, -10))
        ids = tokenizer(p.prompt)["input_ids"]
        labels = [-100] * len(ids)
        for text, trained in p.corrected_solution(at, wrong if wrong >= 0 else right + 1):
            toks = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += toks
            labels += toks if trained else [-100] * len(toks)
        return ids + [tokenizer.eos_token_id], labels + [tokenizer.eos_token_id]

    return arithmetic_example if corrections == 0 else example


def arithmetic_example(rng: random.Random, tokenizer) -> tuple[list[int], list[int]]:
    """``(ids, labels)`` of one pair of the arithmetic mixture: the loss is on the completion and its EOS."""
    prompt, completion = training_pair(rng)
    p = tokenizer(prompt)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p + c, [-100] * len(p) + c


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


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """nanoGPT's optimiser: AdamW (betas 0.9/0.98), weight decay on matrices only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98))


def summed_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, ...], tokens: int) -> torch.Tensor:
    """Cross-entropy of a ``(input_ids, attention_mask, labels)`` batch summed over its labelled tokens and divided
    by a fixed ``tokens``, not by this batch's token count: batches are grouped by length, and a per-batch mean
    would give tokens of long examples less weight (the model then under-learns choices made once per example,
    such as the solution style)."""
    ids, mask, labels = batch
    moe = getattr(model.config, "num_experts", None) is not None  # a mixture of experts adds its router's loss
    out = model(input_ids=ids, attention_mask=mask, **({"output_router_logits": True} if moe else {}))
    logits = out.logits[:, :-1]
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
    )
    loss = ce / tokens
    if moe and getattr(out, "aux_loss", None) is not None:
        loss = loss + model.config.router_aux_loss_coef * out.aux_loss
    return loss


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
    from transformers import LlamaForCausalLM, Qwen3MoeForCausalLM

    from steerable.lm.builtin import model_config, moe_config
    from steerable.tasks.builtin.tokenizer import build_tokenizer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tok = build_tokenizer()
    ids = (len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    model = Qwen3MoeForCausalLM(moe_config(*ids)) if cfg.arch == "moe" else LlamaForCausalLM(model_config(*ids))
    opt = adamw(model, cfg.lr, cfg.weight_decay)
    data = Batches(random.Random(cfg.seed), tok, cfg.batch_size, example=corrected_example(cfg.corrections))
    out = Path(cfg.out)

    def loss() -> torch.Tensor:
        return summed_loss(model, next(data), cfg.batch_size * TOKENS_PER_EXAMPLE)

    def dev_check(run: Run) -> dict:
        row = {"step": run.step, "seconds": round(run.seconds), "loss": round(run.loss, 4)}
        row.update(dev_accuracy(model, tok, cfg.dev_size))
        model.train()
        return row

    def good_enough(row: dict) -> bool:  # the early stop: imperfect on hard problems, so that search has room
        return cfg.stop_at_hard is not None and row["dev_hard"] >= cfg.stop_at_hard and row["dev_easy"] >= cfg.min_easy

    model.train()
    run = train_loop(
        model,
        opt,
        loss,
        lambda step, spent: warmup_cosine(step, spent, cfg.lr, cfg.min_lr, cfg.warmup),
        Budget(cfg.minutes, cfg.steps),
        label="train built-in",
        data=data,
        checkpoint=out / CHECKPOINT,
        settings=asdict(cfg),
        average=0.02,
        clip=1.0,
        log_every=cfg.eval_every,
        log=dev_check,
        stop=good_enough,
        progress=progress,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    final = None
    if cfg.eval_every:
        final = run.history[-1] if run.stopped_early else dev_accuracy(model, tok, cfg.dev_size)
    record = {
        **provenance(cfg, "builtin train", unused=("minutes",) if cfg.steps else ()),
        "steps": run.step,
        "wall_seconds": round(run.seconds, 1),
        "final_loss_ema": round(run.loss, 5),
        "stopped_early_at_step": run.step if run.stopped_early else None,
        "final_dev_accuracy": final,
        "history": run.history,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
