"""Training CTRLS's latent actions and the policy over them (``steerable agent train-ctrls``): k-means of the
model's step hidden states on training tasks gives the steering vectors, then REINFORCE with a learned baseline,
ε-greedy behaviour and an entropy bonus trains the linear policy (the objective: :mod:`steerable.agents.ctrls`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from steerable.agents.ctrls import LatentActions, hidden_at, steered_episodes
from steerable.agents.process import AgentProcess, episode
from steerable.config import check, opt
from steerable.errors import ConfigError
from steerable.lm.types import SamplingParams
from steerable.provenance import provenance

# -- k-means and the policy's loss: pure functions over tensors ------------------------------------------------


def kmeans(x: torch.Tensor, k: int, iters: int = 50, generator: torch.Generator | None = None):
    """Lloyd's k-means with k-means++ seeding: ``(centroids [k, d], labels [n])``."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"k-means needs 1 <= k <= points (got k={k} for {n} points): collect more episodes")
    x = x.float()
    first = int(torch.randint(n, (1,), generator=generator))
    cents = [x[first]]
    for _ in range(1, k):
        d2 = torch.cdist(x, torch.stack(cents)).pow(2).min(1).values  # [n]
        p = d2 / d2.sum() if d2.sum() > 0 else torch.full((n,), 1.0 / n)
        cents.append(x[int(torch.multinomial(p, 1, generator=generator))])
    c = torch.stack(cents)  # [k, d]
    labels = torch.cdist(x, c).argmin(1)
    for _ in range(iters):
        for j in range(k):
            members = x[labels == j]
            if len(members):
                c[j] = members.mean(0)
        new = torch.cdist(x, c).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return c, labels


def behaviour_probs(logits: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``μ_ε = (1 - ε)·softmax(logits) + ε/K``: what an ε-greedy step draws from, ``[batch, K]``."""
    k = logits.shape[-1]
    return (1 - epsilon) * torch.softmax(logits, -1) + epsilon / k


def policy_loss(
    logits: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    epsilon: float,
    entropy_coef: float,
    baseline: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``-(mean((r - b)·log μ_ε(a|z)) + β·mean(H(π(·|z))))``: REINFORCE with a baseline on the behaviour policy
    that acted, plus the entropy bonus. ``logits [n, K]``, ``actions [n]``, ``rewards [n]``; ``baseline [n]`` is
    each step's ``b`` (a learned value of its state, taken as a constant), the batch's mean reward if None."""
    logp = torch.log(behaviour_probs(logits, epsilon).gather(-1, actions[:, None]).squeeze(-1))
    adv = rewards - (rewards.mean() if baseline is None else baseline.detach())
    pi = torch.softmax(logits, -1)
    entropy = -(pi * torch.log_softmax(logits, -1)).sum(-1).mean()
    pg = -(adv * logp).mean()
    loss = pg - entropy_coef * entropy
    return loss, {"reward": float(rewards.mean()), "entropy": float(entropy.detach()), "pg": float(pg.detach())}


# -- training ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CtrlsTrainConfig:
    """How ``steerable agent train-ctrls`` makes the latent actions and trains the policy over them."""

    out: str = opt(..., "Directory to write ctrls.safetensors and ctrls.json to.", min_len=1)
    model: str = opt("builtin:agent", "The acting model (directory or builtin:agent).", min_len=1)
    env: str = opt("maze", "Environment whose training tasks it learns from (never held-out ones).", min_len=1)
    actions: int = opt(8, "K: latent actions (k-means clusters of step hidden states).", ge=2, le=64)
    layer: int = opt(2, "Decoder layer whose input is the latent state and where the vectors are added.", ge=0)
    strength: float = opt(1.0, "Steering strength of a latent action (times centroid minus mean).", gt=0, le=1000)
    collect: int = opt(64, "Plain episodes at temperature 1 whose step states are clustered.", ge=4, le=100_000)
    iterations: int = opt(200, "Policy updates, each on the steered episodes of one training task.", ge=0, le=100_000)
    group: int = opt(8, "Episodes per update (one task).", ge=2, le=1024)
    epsilon: float = opt(0.1, "ε: share of training steps that take a uniform latent action.", ge=0, le=1)
    entropy: float = opt(0.05, "β: weight of the policy's entropy bonus.", ge=0, le=100)
    lr: float = opt(0.005, "Adam learning rate of the policy.", gt=0, le=10)
    temperature: float = opt(1.0, "Sampling temperature of the model's tokens.", gt=0, le=10)
    seed: int = opt(0, "Seed of the tasks, the sampling, k-means and the policy.", ge=0, lt=2**32)
    max_turns: int = opt(16, "Turns an episode may take at most.", ge=1, le=512)
    threads: int | None = opt(None, "torch threads (default: OMP_NUM_THREADS or every core).", ge=1, le=512)

    def __post_init__(self) -> None:
        check(self)


def _training_task(env: str, rng: random.Random) -> dict:
    from steerable.tasks.agent.data import SPLIT_MAKERS, held_out

    split = "hard" if rng.random() < 0.5 else "easy"
    while True:
        task = SPLIT_MAKERS[env][split](rng)
        if not held_out(task):
            return task


def train_ctrls(cfg: CtrlsTrainConfig, generator, fingerprint: str) -> dict:
    """Collect step states, cluster them into latent actions, train the policy on-policy; save; the record."""
    from steerable.steer.layers import decoder_layers
    from steerable.tasks.agent.data import SPLIT_MAKERS

    t0 = time.time()
    if cfg.env not in SPLIT_MAKERS:
        raise ConfigError(f"--env {cfg.env!r} is not an environment: use one of {', '.join(SPLIT_MAKERS)}")
    model, tok = generator.model, generator.tokenizer
    n_layers = len(decoder_layers(model))
    if cfg.layer >= n_layers:
        raise ConfigError(f"--layer {cfg.layer} does not exist: this model has layers 0..{n_layers - 1}")
    rng = random.Random(f"ctrls-{cfg.seed}")
    g = torch.Generator().manual_seed(cfg.seed)
    params = SamplingParams(temperature=cfg.temperature)
    proc = AgentProcess(generator, params, max_steps=cfg.max_turns, max_tokens=256)

    # 1. step states of the model's own episodes: the layer's input averaged over each turn's tokens
    befores, step_texts, lasts, zs = [], [], [], []
    for _ in range(cfg.collect):
        cond = episode(_training_task(cfg.env, rng))
        state = proc.init(cond, 1, seed=rng.randrange(2**31))
        while not proc.is_terminal(state)[0]:
            before, acted = cond.prompt + proc.preview(state)[0], state.envs[0].steps
            proc.propose(state)
            if state.envs[0].steps == acted:
                continue  # a turn that sent no action (it ended the text, or ran out) is no latent action
            new = (cond.prompt + proc.preview(state)[0])[len(before) :]
            written = before + "".join(ln for ln in new.splitlines(keepends=True) if not ln.startswith("= "))
            befores.append(before)
            step_texts.append(written)  # the turn's own tokens, its observation left out
            lasts.append(len(tok(written)["input_ids"]) - len(tok(before)["input_ids"]))
    for i in range(0, len(step_texts), 64):
        zs.append(hidden_at(model, tok, step_texts[i : i + 64], cfg.layer, lasts[i : i + 64]))
    steps_h = torch.cat(zs)  # [n_steps, hidden]
    states = torch.cat([hidden_at(model, tok, befores[i : i + 64], cfg.layer) for i in range(0, len(befores), 64)])
    cents, labels = kmeans(steps_h, cfg.actions, generator=g)
    vectors = cents - steps_h.mean(0)
    k = cfg.actions
    acts = LatentActions(vectors, cfg.layer, cfg.strength, torch.zeros(k, vectors.shape[1]), torch.zeros(k),
                         states.mean(0), states.std(0).clamp(min=1e-4))  # fmt: skip

    # 2. the policy, on-policy: REINFORCE on the ε-greedy behaviour with a learned baseline b(z) (a linear value
    # of the state fitted to the step rewards: steps from hard states fail whatever the action), entropy bonus
    w = acts.weight.clone().requires_grad_(True)
    b = acts.bias.clone().requires_grad_(True)
    vw = torch.zeros(vectors.shape[1], requires_grad=True)
    vb = torch.zeros((), requires_grad=True)
    acts.weight, acts.bias = w, b
    opt_ = torch.optim.Adam([w, b, vw, vb], lr=cfg.lr)
    curve = []
    for _ in range(cfg.iterations):
        cond = episode(_training_task(cfg.env, rng))
        state, steps, logits = steered_episodes(proc, cond, cfg.group, acts, cfg.epsilon, rng.randrange(2**31),
                                                grad=True)  # fmt: skip
        rewards = torch.tensor(steps.rewards)
        value = ((torch.stack(steps.z) - acts.mu) / acts.sd) @ vw + vb  # [n_steps]
        loss, metrics = policy_loss(logits, torch.tensor(steps.actions), rewards, cfg.epsilon, cfg.entropy, value)
        loss = loss + torch.nn.functional.mse_loss(value, rewards)
        opt_.zero_grad()
        loss.backward()
        opt_.step()
        curve.append({**{m: round(v, 4) for m, v in metrics.items()},
                      "solved": round(sum(e.solved for e in state.envs) / cfg.group, 4)})  # fmt: skip
    acts.weight, acts.bias = w.detach(), b.detach()
    tail = curve[-max(1, len(curve) // 4) :]
    head = curve[: max(1, len(curve) // 4)]
    record = {
        **provenance(cfg, "agent train-ctrls"),
        "model_fingerprint": fingerprint,
        "step_states": int(steps_h.shape[0]),
        "cluster_sizes": torch.bincount(labels, minlength=k).tolist(),
        "step_reward_first_quarter": round(sum(c["reward"] for c in head) / len(head), 4) if curve else None,
        "step_reward_last_quarter": round(sum(c["reward"] for c in tail) / len(tail), 4) if curve else None,
        "solved_last_quarter": round(sum(c["solved"] for c in tail) / len(tail), 4) if curve else None,
        "entropy_last": curve[-1]["entropy"] if curve else None,
        "seconds": round(time.time() - t0, 1),
    }
    acts.save(Path(cfg.out), record)
    return record
