"""Train the built-in agent model from scratch on the agent world's demonstrations (:mod:`.data`).

``steerable agent train --out DIR --minutes N`` runs this: the built-in
trainer's loop (:func:`steerable.training.train_loop`) on a smaller Llama
(about 0.87M parameters, saved in float16 so the shipped weights stay under
2 MB). The loss is on the model's own lines only: prompts and every
observation an environment writes are masked (label -100), as TRL masks
environment tokens with ``env_mask``. The log rows hold teacher-forced token
accuracy of the model's lines on held-out demonstrations per environment;
greedy success per environment and split is measured afterwards by the
command, with the agent process, and recorded beside the weights.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from steerable.config import opt
from steerable.errors import ConfigError
from steerable.provenance import provenance
from steerable.tasks.agent import data
from steerable.tasks.builtin.train import Batches, adamw, collate, summed_loss
from steerable.training import CHECKPOINT, Budget, Run, train_loop, warmup_cosine

TOKENS_PER_EXAMPLE = 48  # a typical count of trained tokens per demonstration: the loss's fixed normaliser


@dataclass(frozen=True)
class AgentTrainConfig:
    """How ``steerable agent train`` trains the built-in agent model."""

    out: str = opt(..., "Directory to write the model to.")
    minutes: float = opt(25.0, "Wall-time budget; the LR schedule spans it.")
    steps: int | None = opt(None, "Exact number of steps (reproducible); overrides --minutes.")
    seed: int = opt(0, "Seed for data and initialisation.")
    batch_size: int = opt(64, "Demonstrations per step.")
    lr: float = opt(3e-3, "Peak learning rate (AdamW, betas 0.9/0.98).")
    min_lr: float = opt(1e-4, "Learning rate at the end of the cosine schedule.")
    warmup: int = opt(100, "Linear warm-up steps.")
    weight_decay: float = opt(0.1, "AdamW weight decay on matrices.")
    threads: int | None = opt(None, "torch threads (default: OMP_NUM_THREADS or every core).")
    eval_every: int = opt(250, "Steps between held-out token-accuracy checks (0: none).")
    init: str | None = opt(None, "Start from this model (builtin for the arithmetic model, or a directory with the "
                           "same tokenizer) instead of from scratch.")  # fmt: skip
    mix: str = opt("agent", "The demonstration mixture: agent (builtin:agent's), plan (builtin:agent-plan's: "
                   "chains-heavy) or KIND=SHARE,... (kinds: calculator, lookup, maze, chains, workspace, "
                   "iad).")  # fmt: skip

    def __post_init__(self) -> None:
        if self.minutes <= 0 and self.steps is None:
            raise ConfigError(f"--minutes must be > 0 (got {self.minutes}), or give --steps")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps must be >= 1 (got {self.steps})")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1 (got {self.batch_size})")
        parse_mix(self.mix)


def parse_mix(spec: str) -> tuple[tuple[str, float], ...]:
    """``agent``, ``plan`` or ``KIND=SHARE,...`` as ``((kind, share), ...)``."""
    if spec == "agent":
        return data.MIX
    if spec == "plan":
        return data.PLAN_MIX
    out = []
    for part in spec.split(","):
        kind, _, share = part.partition("=")
        try:
            w = float(share)
        except ValueError:
            w = -1.0
        if kind not in data.KINDS or not 0 < w <= 1000:
            raise ConfigError(f"--mix: {part!r} is not KIND=SHARE with a kind of {', '.join(data.KINDS)} and a "
                              "positive share (or use agent / plan)")  # fmt: skip
        out.append((kind, w))
    if len({k for k, _ in out}) != len(out):
        raise ConfigError(f"--mix names a kind twice ({spec!r}): give each kind once")
    return tuple(out)


def model_config(tok):
    """The agent model's architecture: a 4-layer Llama of width 128 (about 0.87M parameters); positions up to
    1024, though training never goes past about 300 (long transcripts are meant to strain it)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )


def initial_model(init: str, tok):
    """The model to fine-tune from, in float32: its vocabulary must be the agent world's (the char tokenizer);
    positions are opened to 1024 (rotary, so nothing is resized) for long transcripts."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from steerable.lm.loading import model_dir

    where = Path(model_dir(init))
    if not (where / "config.json").exists():
        raise ConfigError(f"--init {init!r} is not a model directory: pass builtin or a directory a trainer wrote")
    config = AutoConfig.from_pretrained(where)
    if config.vocab_size != len(tok):
        raise ConfigError(f"--init {init!r} has a vocabulary of {config.vocab_size}, not the agent world's "
                          f"{len(tok)}: start from builtin or another model of this tokenizer")  # fmt: skip
    config.max_position_embeddings = max(config.max_position_embeddings, 1024)
    return AutoModelForCausalLM.from_pretrained(where, config=config, dtype=torch.float32)


def encode_demo(segments: list[data.Segment], tokenizer) -> tuple[list[int], list[int]]:
    """``(ids, labels)``: labels are -100 on the prompt and on what the environment wrote; a demonstration that
    ends the episode (an answer, or the maze's goal) is followed by a trained EOS."""
    ids = [tokenizer.bos_token_id]
    labels = [-100]
    for text, trained in segments:
        toks = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += toks
        labels += toks if trained else [-100] * len(toks)
    last = segments[-1][0]
    if last.startswith("A:") or last == "= goal\n":
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    return ids, labels


def demo_example(mix: tuple[tuple[str, float], ...]):
    return lambda rng, tokenizer: encode_demo(data.training_demo(rng, mix), tokenizer)


_DEV_DEMOS = {"workspace": data.workspace_demo, "iad": data.iad_demo}


@torch.inference_mode()
def token_accuracy(model, tokenizer, n: int = 48, kinds=("calculator", "lookup", "maze", "chains")) -> dict[str, float]:
    """Teacher-forced accuracy of the model's own tokens on held-out demonstrations, per environment (and per
    chains kind, ``workspace`` or ``iad``, where asked)."""
    model.eval()
    out = {}
    for env in kinds:
        rng = random.Random(f"dev-{env}")
        split_env = "chains" if env in _DEV_DEMOS else env
        tasks = [t for split in ("hard", "easy") for t in data.split_tasks(split_env, split, n // 2, seed=7)]
        if env == "iad":
            tasks = [t for t in tasks if len(data.chain_ops(t["ops"])) <= 12] or tasks
        make = _DEV_DEMOS.get(env)
        demos = [make(task, rng) if make else data.demo_of(task, rng) for task in tasks]
        ids, mask, labels = collate([encode_demo(d, tokenizer) for d in demos], tokenizer.pad_token_id)
        pred = model(input_ids=ids, attention_mask=mask).logits[:, :-1].argmax(-1)
        target = labels[:, 1:]
        seen = target != -100
        out[f"tok_{env}"] = round(float(((pred == target) & seen).sum() / seen.sum()), 4)
    return out


def train(cfg: AgentTrainConfig, progress: bool = True) -> tuple[torch.nn.Module, object, dict]:
    """Train; writes the model (float16) and ``training.json`` to ``cfg.out``; returns (model, tokenizer,
    record) with the model in float32 for evaluation."""
    from transformers import LlamaForCausalLM

    from steerable.tasks.builtin.tokenizer import build_tokenizer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tok = build_tokenizer()
    model = initial_model(cfg.init, tok) if cfg.init else LlamaForCausalLM(model_config(tok))
    mix = parse_mix(cfg.mix)
    kinds = tuple(dict.fromkeys(("calculator", "lookup", "maze", "chains") + tuple(k for k, _ in mix)))
    opt_ = adamw(model, cfg.lr, cfg.weight_decay)
    batches = Batches(random.Random(cfg.seed), tok, cfg.batch_size, example=demo_example(mix))
    out = Path(cfg.out)

    def loss() -> torch.Tensor:
        return summed_loss(model, next(batches), cfg.batch_size * TOKENS_PER_EXAMPLE)

    def dev_check(run: Run) -> dict:
        row = {"step": run.step, "seconds": round(run.seconds), "loss": round(run.loss, 4)}
        row.update(token_accuracy(model, tok, kinds=kinds))
        model.train()
        return row

    model.train()
    run = train_loop(
        model,
        opt_,
        loss,
        lambda step, spent: warmup_cosine(step, spent, cfg.lr, cfg.min_lr, cfg.warmup),
        Budget(cfg.minutes, cfg.steps),
        label="train agent model",
        data=batches,
        checkpoint=out / CHECKPOINT,
        settings=asdict(cfg),
        average=0.02,
        clip=1.0,
        log_every=cfg.eval_every,
        log=dev_check,
        progress=progress,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.to(torch.float16).save_pretrained(out)  # half the bytes; loaded back in float32
    model.to(torch.float32)
    tok.save_pretrained(out)
    record = {
        **provenance(cfg, "agent train", unused=("minutes",) if cfg.steps else ()),
        "steps": run.step,
        "wall_seconds": round(run.seconds, 1),
        "final_loss_ema": round(run.loss, 5),
        "final_token_accuracy": token_accuracy(model, tok, kinds=kinds),
        "history": run.history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "saved_dtype": "float16",
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return model, tok, record
