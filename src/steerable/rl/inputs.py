"""The inputs that estimators and losses declare, computed once per generated batch and only when declared.

An estimator's or loss's keyword-only parameters name its inputs (:func:`steerable.rl.core.declared_inputs`);
:data:`PROVIDERS` says how each is computed from a :class:`Batch`. Some take extra passes of the policy:
BRPO's answers sampled after each cut of the thinking, IGPO's probes of the true answer's probability,
ETTRL's response entropies. An input may also add rows to the training batch (BRPO's sampled answers, with
their own advantages) or take tokens out of the loss (:meth:`BatchInputs.extra_rows`, :meth:`BatchInputs.loss_mask`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from steerable.lm.padding import right_padded
from steerable.rl.core import RLConfig
from steerable.rl.rollouts import eval_mode, token_entropies
from steerable.rl.token_advantages import Budgets, brpo_answer_advantages


@dataclass(frozen=True)
class Batch:
    """One generated batch, prompt-major (``group_size`` rollouts per prompt, side by side)."""

    group_size: int
    prompts: list[str]  # each row's prompt text (the group key)
    texts: list[str]  # completion texts
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]  # without padding (EOS included where the rollout stopped)
    answers: list[str | None]  # the true answers (label-free runs: the group's majority answer)
    rewards: torch.Tensor  # [B] the weighted reward
    width: int  # T, the completion width of the padded batch
    off_policy: torch.Tensor  # [B] bool: sampled from another prompt than the one trained (ICPO)
    solved: torch.Tensor | None = None  # [B] bool: the environment's exact verdict (agent rollouts)
    env_mask: list[list[int]] | None = None  # per completion token, 0 where the environment wrote it


@dataclass(frozen=True)
class Context:
    """What the passes over the policy need, and where training stands."""

    model: Any
    tokenizer: Any
    cfg: RLConfig
    extract: Callable[[str], str | None]
    temperature: float
    max_completion: int
    batches_done: int  # generated batches before this one
    progress: float  # fraction of the run's budget spent, in [0, 1)


@dataclass(frozen=True)
class ExtraRows:
    """Rows an input adds to the training batch, each with one advantage for all its tokens and a weight: a
    row of weight k stands for k identical rows (its tokens count k times in a token-mean loss)."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    advantages: torch.Tensor  # [N]
    weights: torch.Tensor  # [N]

    @staticmethod
    def merged(prompt_ids: list[list[int]], completion_ids: list[list[int]], advantages: torch.Tensor) -> ExtraRows:
        """Rows identical in prompt, completion and advantage as one row of their count (two rollouts can share
        a context and an answer, yet judge it against different pools: those stay apart)."""
        index: dict[tuple, int] = {}
        keep, weights = [], []
        adv = [round(float(a), 6) for a in advantages]
        for r, key in enumerate(zip(map(tuple, prompt_ids), map(tuple, completion_ids), adv, strict=True)):
            if key in index:
                weights[index[key]] += 1
            else:
                index[key] = len(keep)
                keep.append(r)
                weights.append(1)
        return ExtraRows(
            [prompt_ids[r] for r in keep],
            [completion_ids[r] for r in keep],
            advantages[keep],
            torch.tensor(weights, dtype=torch.float32),
        )


class BatchInputs:
    """The declared inputs of one batch, each computed on first request."""

    def __init__(self, ctx: Context, batch: Batch):
        self.ctx, self.batch = ctx, batch
        self.metrics: dict[str, float] = {}
        self._cache: dict[str, Any] = {}
        self._extra: list[ExtraRows] = []
        self._mask: torch.Tensor | None = None

    def get(self, name: str) -> Any:
        if name not in self._cache:
            self._cache[name] = PROVIDERS[name](self)
        return self._cache[name]

    def extra_rows(self) -> list[ExtraRows]:
        return list(self._extra)

    def loss_mask(self) -> torch.Tensor | None:
        """``[B, T]``, 0 on the rollout tokens an input takes out of the loss (None: all stay in)."""
        return self._mask


# ---- per-rollout facts ---------------------------------------------------------------------------


def _correct(x: BatchInputs) -> torch.Tensor:
    """The environment's verdict where there is one (agent rollouts), else the extracted answer against the truth."""
    b, extract = x.batch, x.ctx.extract
    if b.solved is not None:
        return b.solved.bool()
    return torch.tensor([a is not None and str(extract(t)) == str(a) for t, a in zip(b.texts, b.answers, strict=True)])


def _lengths(x: BatchInputs) -> torch.Tensor:
    return torch.tensor([len(c) for c in x.batch.completion_ids], dtype=torch.float32)


def char_to_token(tokenizer, ids: list[int], char: int) -> int:
    """Index of the token of ``ids`` that holds character ``char`` of their decoded text (by prefix decoding)."""
    lo, hi = 0, len(ids)  # smallest j with len(decode(ids[: j + 1])) > char
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(ids[: mid + 1], skip_special_tokens=True)) > char:
            hi = mid
        else:
            lo = mid + 1
    return lo


def first_line_at(text: str, marker: str) -> int | None:
    """Character offset of the first line of ``text`` that starts with ``marker`` (None: no such line)."""
    if not marker:
        return None
    if text.startswith(marker):
        return 0
    at = text.find("\n" + marker)
    return None if at < 0 else at + 1


def _first_marker(x: BatchInputs) -> list[int | None]:
    """ASPO: the token position of each rollout's first line that starts with ``aspo_marker`` (its first tool
    call), or None."""
    marker, tok = x.ctx.cfg.aspo_marker, x.ctx.tokenizer
    out: list[int | None] = []
    for text, ids in zip(x.batch.texts, x.batch.completion_ids, strict=True):
        at = first_line_at(text, marker)
        out.append(None if at is None else char_to_token(tok, ids, at))
    return out


def _tool_used(x: BatchInputs) -> torch.Tensor:
    return torch.tensor([p is not None for p in x.get("_first_marker")])


def _positions(x: BatchInputs) -> torch.Tensor:
    lens = x.get("lengths")
    return torch.tensor([float(lens[i]) if p is None else float(p) for i, p in enumerate(x.get("_first_marker"))])


@torch.no_grad()
def _entropies(x: BatchInputs) -> torch.Tensor:
    """Mean token entropy of every rollout under the current policy (one extra forward pass)."""
    b = x.batch
    rows = [p + c for p, c in zip(b.prompt_ids, b.completion_ids, strict=True)]
    with eval_mode(x.ctx.model):
        ents = token_entropies(x.ctx.model, rows, [len(p) for p in b.prompt_ids], x.ctx.temperature)
    return torch.tensor([sum(e) / max(1, len(e)) for e in ents])


# ---- IGPO: turns and the true answer's probability after each ------------------------------------


@torch.no_grad()
def answer_probabilities(model, probes: list[tuple[list[int], list[int]]], batch: int = 256) -> list[float]:
    """``exp(mean log p(answer tokens | context))`` for each ``(context, answer)``, in batches."""
    dev = next(model.parameters()).device
    out: list[float] = []
    with eval_mode(model):
        for k in range(0, len(probes), batch):
            chunk = probes[k : k + batch]
            ids, mask = right_padded([c + a for c, a in chunk], dev)
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
            for i, (c, a) in enumerate(chunk):
                pos = torch.arange(len(c) - 1, len(c) + len(a) - 1, device=dev)
                lp = logp[i, pos, torch.tensor(a, device=dev)]
                out.append(float(lp.mean().exp()))
    return out


def _newlines(tokenizer, ids: list[int], memo: dict[int, bool]) -> list[bool]:
    for t in ids:
        if t not in memo:
            memo[t] = "\n" in tokenizer.decode([t])
    return [memo[t] for t in ids]


def turn_ends(env_mask: list[int]) -> list[int]:
    """Where the turns of an agent rollout end: after each observation the environment wrote (the end of
    every run of 0s in its environment mask)."""
    return [j + 1 for j, m in enumerate(env_mask) if m == 0 and (j + 1 == len(env_mask) or env_mask[j + 1] == 1)]


def round_ids(env_mask: list[int]) -> list[int]:
    """The round of every completion token of an agent rollout: round ``t`` is what the model sampled after the
    ``t``-th observation up to and including the action that draws the next one (or its answer); −1 on the
    tokens the environment wrote. Rounds are numbered 0, 1, ... in order."""
    ends, out, t = set(turn_ends(env_mask)), [], 0
    for j, m in enumerate(env_mask):
        if j in ends:  # an observation ended just before this token: a new round starts
            t += 1
        out.append(t if m else -1)
    return out


def _round_ids(x: BatchInputs) -> torch.Tensor:
    """``[B, T]``: each completion token's round (:func:`round_ids`), −1 on environment tokens and padding.
    Only agent rollouts have rounds (their environment mask says where observations are)."""
    from steerable.errors import ConfigError

    b = x.batch
    if b.env_mask is None:
        raise ConfigError("per-round training needs agent episodes: use --task builtin:agent:ENV:SPLIT")
    out = torch.full((len(b.completion_ids), b.width), -1, dtype=torch.long)
    for i, ids in enumerate(b.completion_ids):
        r = round_ids(b.env_mask[i][: len(ids)])
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _turns(x: BatchInputs) -> dict:
    """IGPO's turns: the turn of every completion token (−1: padding) and, after each turn, the policy's
    probability of the true answer (``igpo_probe`` + answer, teacher-forced, geometric mean over its tokens)
    in one batched pass; a turn's gain is the rise it caused. An agent rollout's turn is an action and the
    observation it drew (:func:`turn_ends`: the probe reads the answer's probability once the observation is
    in the context); any other rollout's turns are its lines."""
    from steerable.errors import ConfigError

    b, tok = x.batch, x.ctx.tokenizer
    if any(a is None for a in b.answers):
        raise ConfigError("igpo needs the true answers (its reward is the gain in their probability)")
    memo: dict[int, bool] = {}
    turns = torch.full((len(b.texts), b.width), -1, dtype=torch.long)
    probe = tok(x.ctx.cfg.igpo_probe, add_special_tokens=False)["input_ids"]
    probes, counts = [], []
    for i, ids in enumerate(b.completion_ids):
        ans = tok(str(b.answers[i]), add_special_tokens=False)["input_ids"]
        if b.env_mask is not None:
            bounds = turn_ends(b.env_mask[i][: len(ids)])
        else:
            bounds = [j + 1 for j, nl in enumerate(_newlines(tok, ids, memo)) if nl]
        t, ends, at = 0, [0], set(bounds)
        for j in range(len(ids)):
            turns[i, j] = t
            if j + 1 in at:
                t += 1
                ends.append(j + 1)
        if ends[-1] == len(ids):  # the completion ends where a turn ends: no turn after it
            ends.pop()
        # the state before each turn: before turn 0, after turn 0, ...
        probes.extend((b.prompt_ids[i] + ids[:e] + probe, ans) for e in ends)
        counts.append(len(ends))
    probs = torch.tensor(answer_probabilities(x.ctx.model, probes)).split(counts)
    return {"gains": [p[1:] - p[:-1] for p in probs], "token_turns": turns}


def f1(predicted: str | None, truth: str | None) -> float:
    """IGPO's official outcome score: token-set F1 of the answer against the truth, −2 when there is no answer
    (the code's malformed format). For a one-number answer this is exact match."""
    if predicted is None or truth is None:
        return -2.0
    p, t = set(str(predicted).lower().split()), set(str(truth).lower().split())
    common = len(p & t)
    if not p or not t or not common:
        return 0.0
    prec, rec = common / len(p), common / len(t)
    return 2 * prec * rec / (prec + rec)


def _outcomes(x: BatchInputs) -> torch.Tensor:
    b = x.batch
    return torch.tensor([f1(x.ctx.extract(t), a) for t, a in zip(b.texts, b.answers, strict=True)])


# ---- BRPO: answers after each cut of the thinking --------------------------------------------------


@dataclass
class _Plan:
    contexts: list[list[int]] = field(default_factory=list)  # prompt + thinking up to the cut + answer opener
    where: list[tuple[int, int]] = field(default_factory=list)  # (rollout, budget) of each context


def _budgets(x: BatchInputs) -> Budgets:
    """BRPO's cuts. Budgets ``b_s = L_max (s + 1) / S``; a rollout's thinking is its text before the answer
    line (``A:``). At budget ``b_s`` a rollout whose thinking is longer is cut after its last line that ends
    within ``b_s`` tokens (the official code cuts mid-text and appends an ellipsis; our model has no such
    marker, and half a line reads as a wrong step), and ``A: `` is appended; a rollout whose thinking ended
    earlier keeps all of it and its own ``A: ``. After each cut ``brpo_answers`` answers are sampled (the
    rollout temperature, one line) and scored by the verifier; ``r_s`` is their mean.

    With ``brpo_train_answers`` (the official ``summary_method=brpo``) the sampled answers join the training
    batch with their own advantage (:func:`brpo_answer_advantages`), and the rollout's own answer digits are
    taken out of its loss (answers are trained as answers, the thinking as thinking). Otherwise only the
    rollouts train, their answer line with the last segment's advantage."""
    from steerable.lm.local import LocalGenerator
    from steerable.lm.sequences import Sequences
    from steerable.lm.types import SamplingParams

    cfg, b, tok = x.ctx.cfg, x.batch, x.ctx.tokenizer
    s_count, a_count = cfg.brpo_budgets, cfg.brpo_answers
    limits = [round(x.ctx.max_completion * (s + 1) / s_count) for s in range(s_count)]
    opener = "A: "
    opener_ids = tok(opener, add_special_tokens=False)["input_ids"]
    memo: dict[int, bool] = {}
    cuts = torch.zeros(len(b.texts), s_count, dtype=torch.long)
    mask = torch.ones(len(b.texts), b.width)
    plan = _Plan()
    for i, (text, ids) in enumerate(zip(b.texts, b.completion_ids, strict=True)):
        line_starts = [0] + [j + 1 for j, nl in enumerate(_newlines(tok, ids, memo)) if nl]
        at = 0 if text.startswith("A:") else text.find("\nA:") + 1  # the answer line, if any
        think = char_to_token(tok, ids, at) if (at > 0 or text.startswith("A:")) else len(ids)
        has_answer = think < len(ids)
        # where this rollout's answer itself starts (after its own "A: ", however its tokenizer split it)
        own = char_to_token(tok, ids, at + len(opener)) if has_answer else len(ids)
        if has_answer and cfg.brpo_train_answers:
            mask[i, own:] = 0  # its answer is trained through the sampled answers
        for s, limit in enumerate(limits):
            if has_answer and think <= limit:
                cuts[i, s] = own
                ctx_ids = b.prompt_ids[i] + ids[:own]
            else:
                cut = max((p for p in line_starts if p <= min(limit, think)), default=0)
                cuts[i, s] = cut
                ctx_ids = b.prompt_ids[i] + ids[:cut] + opener_ids
            plan.contexts.extend([ctx_ids] * a_count)
            plan.where.extend([(i, s)] * a_count)
    # each distinct context is prefilled once and forked into the samples it needs (a rollout whose thinking
    # ended early has the same context at several budgets)
    unique: dict[tuple[int, ...], list[int]] = {}
    for k, c in enumerate(plan.contexts):
        unique.setdefault(tuple(c), []).append(k)
    model = x.ctx.model
    with eval_mode(model):
        gen = LocalGenerator(model, tok, chat_template="never")
        keys = list(unique)
        seqs = Sequences([list(c) for c in keys], [len(c) for c in keys], list(range(len(keys))))
        gen.prefill(seqs)
        seqs = seqs.select([u for u, c in enumerate(keys) for _ in unique[c]])
        params = SamplingParams(temperature=x.ctx.temperature, max_new_tokens=cfg.brpo_answer_tokens, stop=("\n",))
        out = gen.step(seqs, params)
    sample_of = [k for c in keys for k in unique[c]]  # sampled row -> plan entry
    scores = torch.zeros(len(b.texts), s_count, a_count)
    answers: list[list[int]] = [[] for _ in plan.contexts]
    for row, k in enumerate(sample_of):
        i, s = plan.where[k]
        got = x.ctx.extract(opener + out.texts[row])
        scores[i, s, k % a_count] = float(b.answers[i] is not None and str(got) == str(b.answers[i]))
        answers[k] = list(out.token_ids[row])  # as sampled: its EOS, or the newline it stopped at
    p = torch.tensor(limits, dtype=torch.float32)
    priors = {
        "uniform": torch.ones(s_count),
        "linear": p / p.sum(),
        "base": torch.nn.functional.one_hot(torch.tensor(s_count - 1), s_count).float(),
    }[cfg.brpo_prior]
    budgets = Budgets(scores=scores, cuts=cuts, priors=priors, length=b.width)
    if cfg.brpo_train_answers:
        adv = brpo_answer_advantages(budgets, b.group_size).reshape(-1)
        # an answer sampled twice from one context is one row of weight 2 (same tokens, same advantage)
        x._extra.append(ExtraRows.merged(plan.contexts, answers, adv))
        x._mask = mask
    x.metrics["brpo/answer_rows"] = float(len(answers)) if cfg.brpo_train_answers else 0.0
    if x._extra:
        x.metrics["brpo/answer_rows_distinct"] = float(len(x._extra[-1].prompt_ids))
    x.metrics["brpo/answer_accuracy"] = float(scores.mean())
    return budgets


PROVIDERS: dict[str, Callable[[BatchInputs], Any]] = {
    "prompts": lambda x: x.batch.prompts,
    "correct": _correct,
    "lengths": _lengths,
    "_first_marker": _first_marker,
    "tool_used": _tool_used,
    "positions": _positions,
    "entropies": _entropies,
    "_turns": _turns,
    "gains": lambda x: x.get("_turns")["gains"],
    "token_turns": lambda x: x.get("_turns")["token_turns"],
    "outcomes": _outcomes,
    "round_ids": _round_ids,
    "budgets": _budgets,
    "off_policy": lambda x: x.batch.off_policy,
    "batches_done": lambda x: x.ctx.batches_done,
    "progress": lambda x: x.ctx.progress,
}
# inputs of a loss that the trainer supplies when the loss runs, not per generated batch
AT_LOSS_TIME = ("generator", "capo_shifts")
