"""PlanGEN (Parmar et al., 2025, "PlanGEN: A Multi-Agent Framework for Generating Planning and Reasoning
Trajectories for Complex Problem Solving"): constraint, verification and selection agents around inference-time
algorithms, the selection agent choosing among them per instance by a modified UCB.

The three agents in the built-in agent world:

- **Constraint agent** (:func:`constraints`): the paper's LLM extracts an
  instance's constraints from its text. Here the environment states them:
  the cap on environment steps (``max_steps``), the lookup's live path
  length and forks (dead ends one must back out of), the maze's shortest
  distance and walls. They are read from the task, and the same numbers are
  the instance features the selection agent's prior looks up.
- **Verification agent**: the agent world's value function
  (:func:`~steerable.agents.registry.make_value`): ``oracle`` (replays the
  plan and checks it against those constraints: 1 solved, 0.5 on track, i.e.
  on the live path / not bumping walls and still within the step cap, 0
  failed) or the learned ``head`` (P(solved) from the model's hidden state).
  A plan (an episode's transcript) gets a score in [0, 1], the paper's 0-100
  scaled; feedback text is not produced, since the acting model cannot read it.
- **Selection agent**: per instance, round after round, pick an algorithm
  ``a`` by the modified UCB (:func:`ucb_scores`)::

      UCB(a) = Q(a)/N(a) + sqrt(2 ln T / N(a)) + lambda_prior * Prior(a | instance)
               + lambda_div / (N(a) + 1) + lambda_rec * Recovery(a)

  with Q(a) the sum of the verifier scores of a's rounds on this instance,
  N(a) its rounds, T all rounds so far, Prior(a | instance) a table over
  instance features (:func:`fit_prior`: the share of training-split instances
  one round of ``a`` solved, never a measured one), and Recovery(a) the share
  of a's rounds that raised the best score after a round that had not reached
  the threshold. Run ``a``, verify its plan, stop once a plan's score reaches
  ``threshold`` or the token budget is spent; the answer is the best-scored
  plan of all rounds.

The algorithms (arms): best-of-N (:class:`~steerable.search.best_of_n.BestOfN`),
step-level beam search (:class:`~steerable.search.beam.BeamSearch`), particle
filtering (:class:`~steerable.search.particle_filter.ParticleFilter`), each on
the agent process (a step is one turn) with the verifier as scorer, and
refinement: PlanGEN's iterative refinement of the best plan so far, which here
keeps the plan's turns up to the first one the verifier rates below
``keep_threshold`` and regenerates the rest (``width`` continuations, the best
kept). ``arms=bon`` (one arm) is that algorithm alone under the same loop and
budget: the single-strategy baseline at equal tokens.

Budget: the generated tokens of the whole run (every round's; observations
the environment writes are not generated). A round starts only while tokens
are left, and is shrunk to the rows the remaining tokens pay for at the run's
mean tokens per row so far, so a run overshoots by less than a row's episode.

Where this differs from the paper, and why:

- The paper's arms are BoN, Tree-of-Thought and REBASE run by an LLM; ours
  are the library's BoN, beam, PF and refinement over the agent process (the
  issue's set; beam stands in for ToT's breadth-first search over steps).
- The prior is a fitted table over the instance features, not an LLM's
  judgement of the instance's complexity (the built-in model cannot judge).
- The UCB formula's terms follow the paper's selection agent as recalled in
  the project's notes; the paper's text was not reachable here to check the
  terms' exact form and the lambda values, so the weights are options
  (defaults ours: lambda_prior 1, lambda_div 0.1, lambda_rec 0.1).
- An arm not yet tried has an unbounded exploration term, so untried arms
  are tried first, as in UCB1, in the order of their prior (the prior decides
  the first algorithm an instance gets).
- The threshold (0.9 of [0, 1]) is ours: with the oracle it means solved.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerable.agents.process import Episode, answer_of
from steerable.config import check, opt
from steerable.errors import ConfigError, InputError
from steerable.reward.scorer import Scorer, checked_scores
from steerable.search.base import Extract, Meter, require
from steerable.search.beam import BeamSearch
from steerable.search.best_of_n import BestOfN
from steerable.search.particle_filter import ParticleFilter
from steerable.search.result import Candidate, Result
from steerable.streams import derive_seed
from steerable.tasks.agent.envs import distances, live_path, replay

ARMS = ("bon", "beam", "pf", "refine")
PRIOR_FILE = "plangen_prior.json"


def constraints(task: Mapping[str, Any]) -> dict[str, Any]:
    """The constraint agent: what an instance demands, read from its task (the features of the prior)."""
    env = str(task.get("env", ""))
    out: dict[str, Any] = {"env": env, "max_steps": task.get("max_steps")}
    if env == "lookup":
        table = task["table"]
        out.update(hops=len(live_path(table, task["start"]) or ()),
                   forks=sum(len(v.split()) == 2 for v in table.values()))  # fmt: skip
    elif env == "maze":
        grid = task["grid"]
        start = divmod(grid.replace("/", "").index("S"), 5)
        out.update(distance=distances(grid)[start], walls=grid.count("#"))
    return out


def bucket(cons: Mapping[str, Any]) -> str:
    """The prior table's row of an instance: its environment and a coarse difficulty from its constraints (the
    lookup's live path of 4+ cells, the maze's goal 3+ moves away)."""
    env = cons["env"]
    if env == "lookup":
        return f"lookup:{'long' if cons['hops'] >= 4 else 'short'}"
    if env == "maze":
        return f"maze:{'far' if cons['distance'] >= 3 else 'near'}"
    return env


@dataclass
class ArmStats:
    """One arm's record on the current instance: rounds N, summed scores Q, recoveries."""

    n: int = 0
    q: float = 0.0
    recoveries: int = 0


def ucb_scores(stats: Mapping[str, ArmStats], prior: Mapping[str, float], lambda_prior: float, lambda_div: float,
               lambda_rec: float) -> dict[str, float]:  # fmt: skip
    """The selection agent's modified UCB of every arm (``inf`` for an arm not yet tried)."""
    t = sum(s.n for s in stats.values())
    out = {}
    for a, s in stats.items():
        if s.n == 0:
            out[a] = math.inf
            continue
        out[a] = (s.q / s.n + math.sqrt(2 * math.log(t) / s.n) + lambda_prior * prior.get(a, 0.0)
                  + lambda_div / (s.n + 1) + lambda_rec * s.recoveries / s.n)  # fmt: skip
    return out


def choose(stats: Mapping[str, ArmStats], prior: Mapping[str, float], lambdas: tuple[float, float, float]) -> str:
    """The arm with the highest UCB; among untried arms, the one with the highest prior (then table order)."""
    scores = ucb_scores(stats, prior, *lambdas)
    order = list(stats)
    return max(order, key=lambda a: (scores[a], prior.get(a, 0.0) if math.isinf(scores[a]) else 0.0, -order.index(a)))


def turns(text: str) -> list[str]:
    """A transcript cut into turns: each ends with the observation line the environment wrote (``= ...``); what
    follows the last observation (an answer) is a last turn."""
    out, cur = [], ""
    for line in text.splitlines(keepends=True):
        cur += line
        if line.startswith("= "):
            out.append(cur)
            cur = ""
    return out + ([cur] if cur else [])


def kept_prefix(scorer: Scorer, cond: Episode, text: str, keep: float) -> str:
    """Refinement's review: the plan's turns up to, not including, the first whose prefix the verifier rates
    below ``keep`` (and never a prefix whose episode is already over)."""
    parts = turns(text)
    prefixes = ["".join(parts[: i + 1]) for i in range(len(parts))]
    if not prefixes:
        return ""
    scores = checked_scores(scorer, [cond] * len(prefixes), prefixes)
    cut = next((i for i, s in enumerate(scores) if s < keep), len(parts))
    while cut > 0 and replay(cond.env, prefixes[cut - 1]).done:
        cut -= 1
    return "".join(parts[:cut])


def load_prior(where: str) -> dict[str, dict[str, float]]:
    """A prior table written by :func:`fit_prior` (``{"table": {bucket: {arm: p}}}``); ``builtin``: the one
    shipped beside the agent model's value head, fitted for ``builtin:agent`` with the oracle verifier on
    training-split tasks (``benchmarks/agent_plangen.py --fit-prior`` rewrites it)."""
    if where == "builtin":
        from steerable.lm.loading import AGENT_VALUE_DIR

        where = str(AGENT_VALUE_DIR / PRIOR_FILE)
    path = Path(where)
    if not path.is_file():
        raise ConfigError(f"plangen: prior {where!r} is not builtin, uniform or a JSON file: write one with fit_prior "
                          f"(benchmarks/agent_plangen.py --fit-prior FILE)")  # fmt: skip
    try:
        table = json.loads(path.read_text())["table"]
    except (ValueError, KeyError) as e:
        raise InputError(f"plangen: {where} is not a prior table ({e}): write one with fit_prior") from None
    return {b: {a: float(p) for a, p in row.items()} for b, row in table.items()}


@dataclass(frozen=True)
class PlanGEN:
    """The selection agent's loop over algorithms; ``budget`` is the generated tokens of the whole run."""

    extract: Extract = answer_of
    arms: str = opt("bon+beam+pf+refine", "The algorithms to choose among, joined by '+' (one: that one alone).",
                    min_len=1)  # fmt: skip
    width: int = opt(4, "Rows per round: BoN's N, PF's particles, beams x expansions, refinement's continuations.",
                     ge=1, le=256)  # fmt: skip
    threshold: float = opt(0.9, "Stop once a plan's verifier score reaches this.", ge=0.0, le=1.0)
    keep_threshold: float = opt(0.5, "Refinement keeps the turns up to the first rated below this.", ge=0.0, le=1.0)
    prior: str = opt(
        "builtin",
        "Prior(a | instance): builtin (fitted for builtin:agent), uniform, or a JSON table written by fit_prior.",
        min_len=1,
    )
    lambda_prior: float = opt(1.0, "Weight of the prior in the UCB.", ge=0.0, le=100.0)
    lambda_div: float = opt(0.1, "Weight of the diversity bonus 1/(N(a)+1).", ge=0.0, le=100.0)
    lambda_rec: float = opt(0.1, "Weight of the recovery score.", ge=0.0, le=100.0)
    expansions: int = opt(2, "Beam: children per beam per step.", ge=1, le=64)
    max_rounds: int = opt(64, "Rounds per instance at most.", ge=1, le=10_000)
    table: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    name = "plangen"

    def __post_init__(self) -> None:
        check(self, "plangen: ")
        unknown = [a for a in self.arm_list if a not in ARMS]
        if unknown or len(set(self.arm_list)) != len(self.arm_list):
            raise ConfigError(f"plangen: arms {self.arms!r} must name distinct ones of {', '.join(ARMS)} joined by "
                              f"'+' (e.g. arms=bon+pf)")  # fmt: skip
        if self.prior != "uniform":
            object.__setattr__(self, "table", load_prior(self.prior))

    @property
    def arm_list(self) -> list[str]:
        return self.arms.split("+")

    def prior_of(self, task: Mapping[str, Any]) -> dict[str, float]:
        row = self.table.get(bucket(constraints(task)), {})
        return {a: row.get(a, 0.0) for a in self.arm_list}

    def run(self, process, scorer: Scorer, budget: int, cond: Episode, seed: int | None = None) -> Result:
        require(budget, scorer, self.name, unit_range=True)
        meter = Meter(process, scorer)
        tokens0 = process.usage.generated_tokens
        prior = self.prior_of(cond.env.task)
        stats = {a: ArmStats() for a in self.arm_list}
        pool: list[tuple[str, float, str]] = []  # (plan, verifier score, arm)
        best, rows_run, chosen = (None, -1.0), 0, {a: 0 for a in self.arm_list}
        while len(pool) < self.max_rounds and best[1] < self.threshold:
            spent = process.usage.generated_tokens - tokens0
            if spent >= budget:
                break
            per_row = spent / rows_run if rows_run else 0.0
            k = self.width if not per_row else max(1, min(self.width, math.ceil((budget - spent) / per_row)))
            arm = choose(stats, prior, (self.lambda_prior, self.lambda_div, self.lambda_rec))
            sub = derive_seed(seed, "plangen", len(pool)) if seed is not None else None
            text = self._run_arm(arm, process, scorer, cond, k, best[0], sub)
            score = checked_scores(scorer, [cond], [text])[0]
            s = stats[arm]
            s.n, s.q = s.n + 1, s.q + score
            s.recoveries += int(bool(pool) and score > best[1])  # the best so far was below the threshold
            chosen[arm] += 1
            rows_run += k
            pool.append((text, score, arm))
            if score > best[1]:
                best = (text, score)
        pick = max(range(len(pool)), key=lambda i: pool[i][1])
        cands = tuple(Candidate(t, self.extract(t), sc, float(i == pick)) for i, (t, sc, _) in enumerate(pool))
        counts = {"rounds": len(pool), "threshold_reached": int(best[1] >= self.threshold),
                  **{f"chose_{a}": n for a, n in chosen.items()}}  # fmt: skip
        info = {"counts": counts, "arms": [a for _, _, a in pool], "scores": [round(sc, 4) for _, sc, _ in pool],
                "prior": prior}  # fmt: skip
        return Result(self.name, budget, pool[pick][0], cands[pick].answer, cands, meter.cost(), info)

    def _run_arm(self, arm: str, process, scorer, cond: Episode, k: int, best: str | None, seed: int | None) -> str:
        """One round of ``arm`` with ``k`` rows: the plan it commits (a transcript from the episode's start)."""
        if arm == "beam":
            return BeamSearch(expansions=self.expansions, extract=self.extract).run(process, scorer, k, cond, seed).text
        if arm == "pf":
            return ParticleFilter(extract=self.extract).run(process, scorer, k, cond, seed, new_run=False).text
        prefix = kept_prefix(scorer, cond, best, self.keep_threshold) if arm == "refine" and best else ""
        sub = Episode(replay(cond.env, prefix), cond.prompt + prefix) if prefix else cond
        return prefix + BestOfN(extract=self.extract).run(process, scorer, k, sub, seed).text


def fit_prior(process, scorer: Scorer, tasks: Sequence[Mapping[str, Any]], arms: Sequence[str] = ARMS,
              width: int = 4, threshold: float = 0.9, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Prior(a | instance) from training-split tasks: per :func:`bucket`, the share of tasks that one round of
    each arm (``width`` rows, verified by ``scorer``) solved, by the task's own answer (training tasks are
    labelled; a learned verifier's confidence is not success). Returns ``{"table": ..., "tasks": ...}``, the
    format ``PlanGEN(prior=FILE)`` reads once written as JSON."""
    from steerable.agents.process import episode

    hits: dict[str, dict[str, int]] = {}
    seen: dict[str, int] = {}
    for i, task in enumerate(tasks):
        b = bucket(constraints(task))
        seen[b] = seen.get(b, 0) + 1
        row = hits.setdefault(b, {a: 0 for a in arms})
        for a in arms:
            one = PlanGEN(arms=a, width=width, threshold=threshold, max_rounds=1)
            cond = episode(task)
            res = one.run(process, scorer, 10**9, cond, seed=derive_seed(seed, "prior", i))
            row[a] += int(replay(cond.env, res.text or "").solved)
    table = {b: {a: round(n / seen[b], 4) for a, n in row.items()} for b, row in hits.items()}
    return {"table": table, "tasks": seen, "width": width, "threshold": threshold}
