"""RL over the built-in agent world: every rollout is an agent episode, the environment's text masked out.

``--task builtin:agent:ENV:SPLIT`` (``ENV`` one of calculator, lookup, maze, chains; ``SPLIT`` easy or
hard; ``builtin:agent:calculator:hard:text`` poses the calculator chains without the tool) trains on tasks
drawn like the split's (never one of its held-out tasks) and evaluates on its held-out tasks.

A rollout is the agent process (:class:`~steerable.agents.process.AgentProcess`, a turn per step): the
model's lines go to the environment and its observations are written into the completion. TRL's
``rollout_func`` returns, per rollout, the completion ids with an **environment mask** (``env_mask``: 0
on the tokens the environment wrote), which TRL 1.16 turns into its ``tool_mask`` and multiplies into the
loss mask, so observation tokens carry no loss; the reward is the environment's exact verifier (the
``solved`` column). Logged per step: ``agent/generated_tokens`` and ``agent/env_tokens`` per rollout
(apart: TRL's ``completions/mean_length`` counts only the model's tokens once a mask is given),
``agent/tool_calls``, ``agent/env_steps`` (actions, a maze's moves included: EAPO's rounds less the answer),
``agent/tool_call_rate`` (share of rollouts that called the tool at least once),
``agent/first_call`` (token position of the first call, among rollouts that call) and
``agent/first_call_share`` (that position over the rollout's length).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from steerable.errors import ConfigError
from steerable.rl.inputs import char_to_token, first_line_at
from steerable.rl.rollouts import _group_size, check_groups, eval_mode
from steerable.streams import derive_seed

PREFIX = "builtin:agent:"
#: the text a tool call (an action) starts its line with, per environment: ASPO's ``aspo_marker``
MARKERS = {"calculator": ">>>", "lookup": "get ", "maze": "go ", "chains": "next"}


@dataclass(frozen=True)
class AgentTask:
    env: str
    split: str
    tools: bool = True

    @property
    def marker(self) -> str:
        return MARKERS[self.env]


def parse_task(task: str) -> AgentTask | None:
    """``builtin:agent:ENV:SPLIT[:text]`` as an :class:`AgentTask`; None for any other task."""
    if not task.startswith(PREFIX):
        return None
    from steerable.tasks.agent.data import SPLIT_MAKERS, SPLITS

    parts = task[len(PREFIX) :].split(":")
    tools = True
    if len(parts) == 3 and parts[2] == "text":
        parts, tools = parts[:2], False
    if len(parts) != 2 or parts[0] not in SPLIT_MAKERS or parts[1] not in SPLITS:
        raise ConfigError(
            f"task {task!r}: write builtin:agent:ENV:SPLIT[:text], ENV one of {', '.join(SPLIT_MAKERS)}, "
            f"SPLIT one of {', '.join(SPLITS)}"
        )
    if not tools and parts[0] != "calculator":
        raise ConfigError(f"task {task!r}: only the calculator can be posed without its tool (':text')")
    return AgentTask(parts[0], parts[1], tools)


def _row(task: dict, tools: bool) -> dict:
    from steerable.tasks.agent.envs import make_env

    env = make_env(task["env"])
    prompt = env.reset(task, tools=tools)  # the environment computes the answer (a maze's is "goal")
    return {"prompt": prompt, "answer": env.answer, "task": json.dumps(task, sort_keys=True)}


def train_rows(t: AgentTask, n: int, seed: int) -> list[dict]:
    """``n`` training rows ``{prompt, answer, task}`` drawn like the split's tasks, none held out."""
    from steerable.tasks.agent.data import SPLIT_MAKERS, held_out

    rng = random.Random(f"agent-rl-{t.env}-{t.split}-{seed}")
    make = SPLIT_MAKERS[t.env][t.split]
    rows = []
    while len(rows) < n:
        task = make(rng)
        if not held_out(task):
            rows.append(_row(task, t.tools))
    return rows


def eval_rows(t: AgentTask, n: int, seed: int = 0) -> list[dict]:
    """The split's held-out tasks (:func:`~steerable.tasks.agent.data.split_tasks`) as rows."""
    from steerable.tasks.agent.data import split_tasks

    return [_row(task, t.tools) for task in split_tasks(t.env, t.split, n, seed)]


# ---- episodes --------------------------------------------------------------------------------------


class _Recorder:
    """The generator, recording for every row of one batch which completion tokens were sampled (mask 1, with
    their log-probabilities) and which the environment wrote (mask 0)."""

    def __init__(self, gen, rows: int):
        self._gen = gen
        self.mask: list[list[int]] = [[] for _ in range(rows)]
        self.logprobs: list[list[float]] = [[] for _ in range(rows)]

    def __getattr__(self, name):
        return getattr(self._gen, name)

    def step(self, seqs, params, stop=None, max_tokens=None, rows=None, top=0):
        out = self._gen.step(seqs, params, stop=stop, max_tokens=max_tokens, rows=rows, top=top)
        for r, (ids, lps) in enumerate(zip(out.token_ids, out.logprobs, strict=True)):
            self.mask[r] += [1] * len(ids)
            self.logprobs[r] += list(lps)
        return out

    def append(self, seqs, texts):
        before = [len(t) for t in seqs.token_ids]
        self._gen.append(seqs, texts)
        for r, b in enumerate(before):
            k = len(seqs.token_ids[r]) - b
            self.mask[r] += [0] * k
            self.logprobs[r] += [0.0] * k


@dataclass
class Episodes:
    """A batch of finished agent episodes, prompt-major."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]  # the model's tokens and the environment's, in order (EOS where sampled)
    env_mask: list[list[int]]  # 1: sampled by the model, 0: written by the environment
    logprobs: list[list[float]]  # 0.0 on environment tokens
    texts: list[str]
    solved: list[bool]
    tool_calls: list[int]
    env_steps: list[int] = field(default_factory=list)  # actions the environment answered (a maze's moves too)
    stats: dict[str, float] = field(default_factory=dict)


def run_episodes(
    model,
    tokenizer,
    tasks: Sequence[dict],
    n: int,
    temperature: float,
    max_tokens: int,
    tools: bool = True,
    seed: int | None = None,
    marker: str | None = None,
) -> Episodes:
    """``n`` episodes of every task (prompt-major) with the agent process on ``model`` (in eval mode meanwhile);
    completions cut at ``max_tokens`` (observations included: they take room in the context too)."""
    from steerable.agents.process import AgentProcess, episode
    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams

    with eval_mode(model), torch.no_grad():
        gen = LocalGenerator(model, tokenizer, chat_template="never")
        rec = _Recorder(gen, len(tasks) * n)
        proc = AgentProcess(rec, params=SamplingParams(temperature=temperature), max_tokens=max_tokens)
        eps = [episode(t, tools=tools) for t in tasks]
        states = [proc.init(ep, n, seed=None if seed is None else derive_seed(seed, k)) for k, ep in enumerate(eps)]
        state = proc.concat(states) if len(states) > 1 else states[0]
        while not all(proc.is_terminal(state)):
            proc.propose(state)
    return _collect(state, rec, tokenizer, max_tokens, marker or "")


def _collect(state, rec: _Recorder, tokenizer, max_tokens: int, marker: str) -> Episodes:
    seqs = state.seqs
    out = Episodes([], [], [], [], [], [], [])
    for r in range(len(seqs)):
        ids = seqs.generated(r)
        if len(ids) != len(rec.mask[r]):
            raise AssertionError(f"row {r}: {len(ids)} completion tokens but {len(rec.mask[r])} recorded")
        out.prompt_ids.append(seqs.token_ids[r][: seqs.prompt_lens[r]])
        out.completion_ids.append(ids[:max_tokens])
        out.env_mask.append(rec.mask[r][:max_tokens])
        out.logprobs.append(rec.logprobs[r][:max_tokens])
        out.texts.append(tokenizer.decode(out.completion_ids[-1], skip_special_tokens=True))
        out.solved.append(bool(state.envs[r].solved))
        out.tool_calls.append(len(state.actions[r]) if state.envs[r].tool else 0)
        out.env_steps.append(len(state.actions[r]))
    out.stats = episode_stats(out, tokenizer, marker)
    return out


def episode_stats(ep: Episodes, tokenizer, marker: str) -> dict[str, float]:
    """Means per rollout: solved, tokens sampled and written, tool calls and where the first one falls."""
    n = max(1, len(ep.completion_ids))
    firsts, shares = [], []
    for text, ids in zip(ep.texts, ep.completion_ids, strict=True):
        at = first_line_at(text, marker)
        if at is not None:
            p = char_to_token(tokenizer, ids, at)
            firsts.append(p)
            shares.append(p / max(1, len(ids)))
    return {
        "solved": sum(ep.solved) / n,
        "generated_tokens": sum(sum(m) for m in ep.env_mask) / n,
        "env_tokens": sum(len(m) - sum(m) for m in ep.env_mask) / n,
        "tool_calls": sum(ep.tool_calls) / n,
        "env_steps": sum(ep.env_steps) / n,
        "tool_call_rate": len(firsts) / n,
        "first_call": sum(firsts) / len(firsts) if firsts else float("nan"),
        "first_call_share": sum(shares) / len(shares) if shares else float("nan"),
    }


# ---- TRL's rollout_func ----------------------------------------------------------------------------


def agent_rollout(t: AgentTask, seed: int = 0):
    """TRL ``rollout_func``: each group's rollouts are episodes of its task. TRL passes the prompts only, and
    a prompt does not determine its task (a lookup prompt names the start key, not the table): the trainer
    keeps the round's dataset rows in ``trainer.rollout_rows`` and the task comes from their ``task``
    column."""

    def rollout(prompts, trainer):
        g = _group_size(trainer)
        check_groups(prompts, g, "agent RL")
        rows = getattr(trainer, "rollout_rows", None)
        if (
            rows is None
            or len(rows) != len(prompts)
            or any(r["prompt"] != p for r, p in zip(rows, prompts, strict=True))
        ):
            raise ConfigError("agent RL needs the trainer's rollout_rows (SteerableGRPOTrainer keeps them)")
        tasks = [json.loads(rows[i]["task"]) for i in range(0, len(prompts), g)]
        batch_seed = derive_seed(seed, "agent-rollout", trainer.state.global_step, len(prompts))
        ep = run_episodes(
            trainer.model,
            trainer.processing_class,
            tasks,
            g,
            trainer.temperature,
            trainer.max_completion_length,
            tools=t.tools,
            seed=batch_seed,
            marker=t.marker,
        )
        m = trainer._metrics["train" if trainer.model.training else "eval"]
        for k, v in ep.stats.items():
            if v == v:  # nan: no rollout called the tool
                m[f"agent/{k}"].append(v)
        return {
            "prompt_ids": ep.prompt_ids,
            "completion_ids": ep.completion_ids,
            "logprobs": ep.logprobs,
            "env_mask": ep.env_mask,
            "solved": ep.solved,
        }

    return rollout


def agent_accuracy(model, tokenizer, rows: list[dict], t: AgentTask, max_tokens: int) -> float:
    """Greedy success over ``rows`` (episodes of their tasks), the held-in evaluation of a run."""
    tasks = [json.loads(r["task"]) for r in rows]
    return evaluate(model, tokenizer, tasks, t, max_tokens)["solved"]


def evaluate(model, tokenizer, tasks: list[dict], t: AgentTask, max_tokens: int, temperature: float = 0.0,
             n: int = 1, seed: int = 0) -> dict[str, float]:  # fmt: skip
    """Greedy (or sampled) episodes of ``tasks``: :func:`episode_stats` plus the per-task solved list."""
    ep = run_episodes(model, tokenizer, tasks, n, temperature, max_tokens, t.tools, seed, t.marker)
    return {**ep.stats, "per_task": [float(s) for s in ep.solved]}
