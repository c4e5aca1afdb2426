"""CTRLS (Wu et al., "CTRLS: Chain-of-Thought Reasoning via Latent State-Transition", 2025): reasoning as an MDP
over latent states, steered by a policy over latent actions that is trained on-policy with ε-greedy exploration
and an entropy bonus while the language model stays frozen.

Here a step is one turn of the :class:`~steerable.agents.process.AgentProcess` (one maze move). The latent
state ``z_t`` is the frozen model's hidden state at the input of layer ``L``, at the last token before the turn.
The ``K`` latent actions are steering vectors: k-means of *step* hidden states (layer ``L``, averaged over the
tokens a turn wrote) collected from the model's own episodes on training tasks, each vector its centroid minus
the mean of all step states. Taking action ``a`` adds ``strength · v_a`` to the residual stream at layer ``L``
while the turn is decoded (:class:`~steerable.steer.interventions.Add`, removed after the turn). The policy is a
linear softmax ``π(a | z) = softmax(W·(z - μ)/σ + b)``; with probability ``ε`` a step takes a uniform action
instead, so the behaviour policy is ``μ_ε(a | z) = (1 - ε)·π(a | z) + ε/K``. Training maximises, on the
policy's own episodes of training tasks,

    J = E[(r_t - b(z_t)) · log μ_ε(a_t | z_t)] + β · E[H(π(· | z_t))]

(REINFORCE with a baseline, plus the entropy bonus; the baseline ``b(z)`` is a linear value of the state fitted
to the step rewards by least squares alongside). The reward of a step is the step verifier (:func:`step_reward`):
1 if the turn solved the task or sent an action after which the episode is still on track (the environment's
exact oracle: the move brought the agent closer to the goal and the goal is within the steps left), else 0. The
diversity the paper claims is measured as distinct correct solutions (``benchmarks/agent_ctrls.py``). A policy
trained on ``builtin:agent``'s maze episodes ships beside the model (``ctrls`` with no ``policy``).

Where this differs from the paper, and why: the paper encodes ``z_t`` with a learned variational encoder, models
a reasoning action as a distribution in a continuous latent space (a distributional policy) and fits a
transition model with an ELBO; the full text was not reachable here, so the design follows its abstract (latent
states, latent actions, on-policy RL with ε-greedy and entropy regularisation, frozen LLM, accuracy and
diversity against sampled CoT). Actions are K discrete steering vectors instead of a continuous distribution,
the transition is the frozen model itself run under the chosen vector (no learned transition model, no ELBO),
and the reward is the environment's exact step verifier instead of a learned one.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from steerable.agents.process import AgentProcess, Episode, answer_of, episode
from steerable.config import check, opt
from steerable.errors import ConfigError, InputError
from steerable.lm.types import SamplingParams
from steerable.provenance import provenance
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, require
from steerable.search.result import Candidate, Result
from steerable.steer.interventions import Add, steer

ARTIFACT = "ctrls.safetensors"
RECORD = "ctrls.json"


# -- k-means, the policy's loss, ε-greedy: pure functions over tensors ------------------------------------------


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


def epsilon_greedy(
    logits: torch.Tensor, epsilon: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One latent action per row: with probability ``ε`` a uniform one, else a draw from ``π``; ``(actions,
    fired)`` where ``fired`` marks the rows whose action was the uniform draw."""
    n, k = logits.shape
    fired = torch.rand(n, generator=generator) < epsilon
    drawn = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=generator).squeeze(-1)
    uniform = torch.randint(k, (n,), generator=generator)
    return torch.where(fired, uniform, drawn), fired


# -- latent states ---------------------------------------------------------------------------------------------


@torch.inference_mode()
def hidden_at(model, tokenizer, texts: Sequence[str], layer: int, last: Sequence[int] | None = None) -> torch.Tensor:
    """The input of decoder layer ``layer`` on each text, ``[len(texts), hidden]``: at its last token, or
    averaged over its last ``last[i]`` tokens."""
    from steerable.lm.padding import left_padded

    batch = left_padded(tokenizer, list(texts), next(model.parameters()).device)
    h = model(**batch, output_hidden_states=True).hidden_states[layer].float()  # [batch, seq, hidden]
    if last is None:
        return h[:, -1]
    return torch.stack([h[i, h.shape[1] - max(m, 1) :].mean(0) for i, m in enumerate(last)])


# -- the artifact: vectors and policy, bound to a model --------------------------------------------------------


@dataclass
class LatentActions:
    """K steering vectors at layer ``layer`` and the linear policy over them."""

    vectors: torch.Tensor  # [K, hidden]
    layer: int
    strength: float
    weight: torch.Tensor  # [K, hidden]
    bias: torch.Tensor  # [K]
    mu: torch.Tensor  # [hidden]: the standardisation of z
    sd: torch.Tensor  # [hidden]

    @property
    def k(self) -> int:
        return self.vectors.shape[0]

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return ((z - self.mu) / self.sd) @ self.weight.T + self.bias  # [n, K]

    def save(self, out: Path, record: dict) -> None:
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        t = {"vectors": self.vectors, "weight": self.weight, "bias": self.bias, "mu": self.mu, "sd": self.sd}
        save_file({k: v.detach().float().contiguous() for k, v in t.items()}, str(out / ARTIFACT))
        (out / RECORD).write_text(json.dumps({**record, "layer": self.layer, "strength": self.strength}, indent=2)
                                  + "\n")  # fmt: skip

    @classmethod
    def load(cls, path: str | Path, fingerprint: str) -> LatentActions:
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / ARTIFACT).exists():
            raise InputError(f"no {ARTIFACT} in {path}: run `steerable agent train-ctrls --out {path}` first")
        record = json.loads((path / RECORD).read_text())
        if record.get("model_fingerprint") != fingerprint:
            raise InputError(f"the CTRLS policy in {path} was trained for another model: train one for this model")
        t = load_file(str(path / ARTIFACT))
        return cls(t["vectors"], int(record["layer"]), float(record["strength"]), t["weight"], t["bias"], t["mu"],
                   t["sd"])  # fmt: skip


def model_fingerprint_of(model) -> str:
    """The files fingerprint of the directory the model was loaded from (what ``agent train-value`` binds to)."""
    from steerable.lm.loading import model_fingerprint

    where = getattr(model.config, "_name_or_path", "")
    if not where or not Path(where).is_dir():
        raise ConfigError("ctrls needs a model loaded from a directory (its policy is bound to the model's files)")
    return model_fingerprint(where)


@lru_cache(maxsize=8)
def _loaded(path: str, fingerprint: str) -> LatentActions:
    return LatentActions.load(path, fingerprint)


# -- steered episodes ------------------------------------------------------------------------------------------


@dataclass
class Steps:
    """What a batch of steered episodes did, one entry per (row, turn)."""

    z: list[torch.Tensor]
    actions: list[int]
    fired: list[bool]
    rewards: list[float]
    state_tokens: int = 0  # tokens the latent-state forward passes read (outside the generator's usage)


def steered_episodes(
    process: AgentProcess, cond: Episode, n: int, acts: LatentActions, epsilon: float, seed: int | None,
    grad: bool = False,
):  # fmt: skip
    """``n`` episodes of ``cond``, each turn decoded under the latent action ε-greedy on ``π(·|z_t)``: the final
    state and the :class:`Steps` taken (with ``grad``, their logits keep the policy's graph)."""
    gen = process.generator
    model, tok = gen.model, gen.tokenizer
    g = torch.Generator().manual_seed(seed if seed is not None else random.randrange(2**31))
    state = process.init(cond, n, seed)
    steps = Steps([], [], [], [])
    logits_all: list[torch.Tensor] = []
    while True:
        live = [r for r, t in enumerate(process.is_terminal(state)) if not t]
        if not live:
            break
        texts = process.preview(state)
        contexts = [cond.prompt + texts[r] for r in live]
        z = hidden_at(model, tok, contexts, acts.layer)
        steps.state_tokens += sum(len(ids) for ids in tok(contexts)["input_ids"])
        with torch.set_grad_enabled(grad):
            logits = acts.logits(z)
        a, fired = epsilon_greedy(logits.detach(), epsilon, g)
        acted = [state.envs[r].steps for r in live]
        for k in range(acts.k):
            rows = [r for r, ak in zip(live, a.tolist(), strict=True) if ak == k]
            if rows:
                with steer(model, Add(acts.vectors[k], layers=(acts.layer,), strength=acts.strength)):
                    process.propose(state, rows=rows)
        for i, r in enumerate(live):
            steps.z.append(z[i])
            steps.rewards.append(step_reward(state.envs[r], acted[i]))
        steps.actions += a.tolist()
        steps.fired += fired.tolist()
        logits_all.append(logits)
    return state, steps, (torch.cat(logits_all) if logits_all else torch.zeros(0, acts.k))


def step_reward(env, steps_before: int) -> float:
    """The step verifier: 1 if the turn solved the task, or sent an action after which the episode is still on
    track (closer to the goal, the goal within the steps left); 0 otherwise (no action, a wall, a wrong turn, an
    ended episode)."""
    if env.solved:
        return 1.0
    return float(env.steps > steps_before and not env.done and env.on_track())


# -- the strategy ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ctrls:
    """N episodes steered step by step by the CTRLS policy over latent actions; the one the value function rates
    best is committed (as ``bon`` commits among plain samples)."""

    extract: Extract = answer_of
    policy: str = opt("", "Directory of a policy from `steerable agent train-ctrls` (empty: the one shipped with "
                      "builtin:agent).")  # fmt: skip
    epsilon: float = opt(0.0, "ε: share of steps that take a uniform latent action at decoding time.", ge=0, le=1)
    strength: float = opt(0.0, "Steering strength (0: the one the policy was trained with).", ge=0, le=1000)
    name = "ctrls"

    def __post_init__(self) -> None:
        check(self)
        if self.policy and not (Path(self.policy) / ARTIFACT).exists():
            raise InputError(f"ctrls: no {ARTIFACT} in {self.policy}: run `steerable agent train-ctrls --out "
                             f"{self.policy}` first")  # fmt: skip

    def actions(self, model) -> LatentActions:
        from steerable.lm.loading import AGENT_CTRLS_DIR

        acts = _loaded(self.policy or str(AGENT_CTRLS_DIR), model_fingerprint_of(model))
        if self.strength:
            acts = LatentActions(acts.vectors, acts.layer, self.strength, acts.weight, acts.bias, acts.mu, acts.sd)
        return acts

    def run(self, process, scorer: Scorer, budget: int, cond: Episode, seed: int | None = None) -> Result:
        require(budget, scorer, self.name)
        if not isinstance(process, AgentProcess) or not hasattr(process.generator, "model"):
            raise ConfigError("ctrls steers a local model's hidden states: run it on a local agent process")
        acts = self.actions(process.generator.model)
        meter = Meter(process, scorer)
        state, steps, _ = steered_episodes(process, cond, budget, acts, self.epsilon, seed)
        samples = process.preview(state)
        scores = checked_scores(scorer, [cond] * len(samples), samples)
        best = max(range(len(samples)), key=lambda i: scores[i])
        cands = tuple(Candidate(t, self.extract(t), s, float(i == best))
                      for i, (t, s) in enumerate(zip(samples, scores, strict=True)))  # fmt: skip
        counts = {f"latent_action_{k}": steps.actions.count(k) for k in range(acts.k)}
        counts.update(steered_turns=len(steps.actions), epsilon_fired=sum(steps.fired),
                      step_verifier_passed=int(sum(steps.rewards)), latent_state_tokens=steps.state_tokens)  # fmt: skip
        return Result(self.name, budget, samples[best], cands[best].answer, cands, meter.cost(), {"counts": counts})


# -- training --------------------------------------------------------------------------------------------------


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
