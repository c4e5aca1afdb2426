"""A learned value function for agent search: a logistic head on the acting model's last hidden state.

Koh et al. score a state by asking a multimodal model whether the task is
done, on track or failed. With no such judge in the built-in world, the value
is learned the way AlphaGo's value network was: Monte-Carlo returns of the
policy's own episodes. ``steerable agent train-value`` samples episodes of
training tasks (never held-out ones) at temperature 1, labels every turn's
state with whether its episode ended solved, and fits ``sigmoid(w·h + b)`` on
the model's final-layer hidden state ``h`` at the state's last token
(cross-entropy, AdamW, an exact number of steps). It sees only what the agent
saw, so unlike :class:`~steerable.agents.tree.OracleValue` it cannot know
which key of a fork is live before reading on; search then has to find out in
copies of the environment. The head is saved with the model's fingerprint and
refused for another model.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from steerable.agents.process import AgentProcess, Episode, episode
from steerable.config import opt
from steerable.errors import ConfigError, InputError
from steerable.lm.types import SamplingParams
from steerable.provenance import provenance

HEAD = "value_head.safetensors"


@dataclass(frozen=True)
class ValueTrainConfig:
    """How ``steerable agent train-value`` fits the value head."""

    out: str = opt(..., "Directory to write value_head.safetensors and value.json to.", min_len=1)
    model: str = opt("builtin:agent", "The acting model (directory or builtin:agent).", min_len=1)
    envs: tuple[str, ...] = opt(("lookup", "maze"), "Environments whose training tasks it learns from.", min_items=1)
    episodes: int = opt(400, "Episodes sampled per environment.", ge=8, le=100_000)
    steps: int = opt(300, "Optimiser steps of the logistic fit.", ge=1, le=100_000)
    seed: int = opt(0, "Seed of the tasks, the sampling and the fit.", ge=0, lt=2**32)
    max_turns: int = opt(32, "Turns an episode may take at most.", ge=1, le=512)


class ValueHead:
    """A :class:`~steerable.reward.scorer.Scorer` over agent transcripts: P(solved) from the state's features."""

    range = (0.0, 1.0)

    def __init__(self, model, tokenizer, weight: torch.Tensor, bias: float) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.weight, self.bias = weight.float(), float(bias)
        self.calls = 0
        self.forward_tokens = 0

    @classmethod
    def load(cls, path: str | Path, model, tokenizer, fingerprint: str) -> ValueHead:
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / HEAD).exists():
            raise InputError(f"no {HEAD} in {path}: run `steerable agent train-value --out {path}` first")
        record = json.loads((path / "value.json").read_text())
        if record.get("model_fingerprint") != fingerprint:
            raise InputError(f"the value head in {path} was fitted for another model: fit one for this model")
        t = load_file(str(path / HEAD))
        return cls(model, tokenizer, t["weight"], float(t["bias"]))

    @torch.inference_mode()
    def score(self, conds: Sequence[Episode], samples: Sequence[str]) -> list[float]:
        texts = [c.prompt + s for c, s in zip(conds, samples, strict=True)]
        feats = features(self.model, self.tokenizer, texts)
        self.calls += len(samples)
        self.forward_tokens += sum(len(ids) for ids in self.tokenizer(texts)["input_ids"])
        return torch.sigmoid(feats @ self.weight.to(feats.device) + self.bias).tolist()


@torch.inference_mode()
def features(model, tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """The final-layer hidden state at each text's last token: ``[len(texts), hidden]``."""
    from steerable.lm.padding import left_padded

    batch = left_padded(tokenizer, list(texts), next(model.parameters()).device)
    return model(**batch, output_hidden_states=True).hidden_states[-1][:, -1].float()


def train_value(cfg: ValueTrainConfig, generator, fingerprint: str) -> dict:
    """Sample, label, fit, save; returns the record (also written to ``value.json``)."""
    from safetensors.torch import save_file

    from steerable.tasks.agent.data import SPLIT_MAKERS, held_out

    t0 = time.time()
    unknown = [e for e in cfg.envs if e not in SPLIT_MAKERS]
    if unknown:
        raise ConfigError(f"--envs {unknown[0]!r} is not an environment: use some of {', '.join(SPLIT_MAKERS)}")
    rng = random.Random(f"value-{cfg.seed}")
    proc = AgentProcess(generator, SamplingParams(temperature=1.0), max_steps=cfg.max_turns, max_tokens=256)
    texts, labels = [], []
    for env in cfg.envs:
        for i in range(cfg.episodes):
            split = "hard" if i % 2 else "easy"
            task = SPLIT_MAKERS[env][split](rng)
            while held_out(task):
                task = SPLIT_MAKERS[env][split](rng)
            cond = episode(task)
            state = proc.init(cond, 1, seed=rng.randrange(2**31))
            prefixes = [cond.prompt]
            while not proc.is_terminal(state)[0]:
                proc.propose(state)
                prefixes.append(cond.prompt + proc.preview(state)[0])
            won = float(state.envs[0].solved)
            texts += prefixes
            labels += [won] * len(prefixes)
    feats = torch.cat([features(generator.model, generator.tokenizer, texts[i : i + 64])
                       for i in range(0, len(texts), 64)])  # fmt: skip
    y = torch.tensor(labels)
    torch.manual_seed(cfg.seed)
    w = torch.zeros(feats.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt_ = torch.optim.AdamW([w, b], lr=0.05, weight_decay=0.01)
    mu, sd = feats.mean(0), feats.std(0).clamp(min=1e-4)
    x = (feats - mu) / sd
    for _ in range(cfg.steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y)
        opt_.zero_grad()
        loss.backward()
        opt_.step()
    # fold the standardisation into the head: w·(h - mu)/sd + b = (w/sd)·h + (b - w·mu/sd)
    weight = (w / sd).detach()
    bias = float((b - (w * mu / sd).sum()).detach())
    with torch.no_grad():
        pred = torch.sigmoid(feats @ weight + bias)
        acc = float(((pred > 0.5).float() == y).float().mean())
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"weight": weight.contiguous(), "bias": torch.tensor(bias)}, str(out / HEAD))
    record = {
        **provenance(cfg, "agent train-value"),
        "model_fingerprint": fingerprint,
        "states": len(texts),
        "solved_share": round(float(y.mean()), 4),
        "final_loss": round(float(loss.detach()), 4),
        "train_accuracy": round(acc, 4),
        "seconds": round(time.time() - t0, 1),
    }
    (out / "value.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
