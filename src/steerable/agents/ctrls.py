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

(REINFORCE with a baseline, plus the entropy bonus, trained in :mod:`~steerable.agents.ctrls_train`; the baseline
``b(z)`` is a linear value of the state fitted to the step rewards by least squares alongside). The reward of a step
is the step verifier (:func:`step_reward`): 1 if the turn solved the task or sent an action after which the episode
is still on track (the environment's exact oracle: the move brought the agent closer to the goal and the goal is
within the steps left), else 0. The diversity the paper claims is measured as distinct correct solutions
(``benchmarks/agent_ctrls.py``). A policy trained on ``builtin:agent``'s maze episodes ships beside the model
(``ctrls`` with no ``policy``).

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
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from steerable.agents.process import AgentProcess, Episode, answer_of
from steerable.config import check, opt
from steerable.errors import ConfigError, InputError
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, require
from steerable.search.result import Candidate, Result
from steerable.steer.interventions import Add, steer

ARTIFACT = "ctrls.safetensors"
RECORD = "ctrls.json"


# -- ε-greedy ------------------------------------------------------------------------------------------------


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
