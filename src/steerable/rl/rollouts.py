"""How rollouts are sampled when not by TRL's plain ``generate``: ICPO's mixed groups and ETTRL's entropy-fork
trees, as TRL ``rollout_func``s on steerable's generator; and the small helpers every sampling or probing pass
shares (eval mode, right padding, per-token entropies).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch

from steerable.errors import ConfigError
from steerable.lm.padding import right_padded


@contextmanager
def eval_mode(model):
    """The model in eval mode (sampling, probing), back to its former mode afterwards, exceptions too."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def check_groups(prompts, g: int, name: str) -> None:
    if len(prompts) % g:
        raise ConfigError(f"{name} needs whole groups: {len(prompts)} prompts for groups of {g}")
    for i in range(0, len(prompts), g):
        if any(p != prompts[i] for p in prompts[i : i + g]):
            raise ConfigError(f"{name} needs each prompt's rollouts side by side")


def _group_size(trainer) -> int:
    return trainer.num_generations if trainer.model.training else trainer.num_generations_eval


def icpo_rollout(demo: str):
    """ICPO's mixed group ("Think Outside the Policy"): G - 1 rollouts of each prompt on-policy and one
    sampled after a one-shot demonstration (``demo`` + prompt), then re-attached to the plain prompt and
    marked off-policy (the ``off_policy`` field) for the shaped loss. Sampled with steerable's generator
    (TRL's ``rollout_func``)."""

    def rollout(prompts, trainer):
        from steerable.lm.local import LocalGenerator
        from steerable.lm.types import SamplingParams

        g = _group_size(trainer)
        check_groups(prompts, g, "ICPO")
        off = [i % g == g - 1 for i in range(len(prompts))]
        with eval_mode(trainer.model):
            gen = LocalGenerator(trainer.model, trainer.processing_class, chat_template="never")
            asks = [demo + p if o else p for p, o in zip(prompts, off, strict=True)]
            params = SamplingParams(temperature=trainer.temperature, max_new_tokens=trainer.max_completion_length)
            outs = gen.generate(asks, params)
        eos = gen.eos_ids[0] if gen.eos_ids else None
        completion_ids, logprobs = [], []
        for c in outs:
            ids, lps = list(c.token_ids), list(c.logprobs)[: len(c.token_ids)]
            if c.finish_reason == "stop" and eos is not None:  # ended by EOS: train the stop too
                ids.append(eos)
                lps.append(0.0)
            completion_ids.append(ids)
            logprobs.append(lps)
        return {
            "prompt_ids": [gen.encode(p) for p in prompts],  # re-attached: every row is trained on its plain prompt
            "completion_ids": completion_ids,
            "logprobs": logprobs,
            "off_policy": off,
        }

    return rollout


def fork_points(entropies: Sequence[float], n: int) -> list[int]:
    """ETMR's fork points: the ``n`` positions of highest token entropy (the last token, usually EOS,
    excluded when there is a choice), highest first; repeated cyclically when a rollout has fewer."""
    if not entropies:
        return [0] * n
    top = sorted(range(max(1, len(entropies) - 1)), key=lambda j: -entropies[j])[:n]
    return [top[k % len(top)] for k in range(n)]


@torch.no_grad()
def token_entropies(model, rows: list[list[int]], starts: list[int], temperature: float) -> list[list[float]]:
    """Entropy of the sampling distribution (logits / T) at every generated token of each row:
    ``rows[i]`` is prompt + completion, the completion beginning at ``starts[i]``."""
    ids, mask = right_padded(rows, next(model.parameters()).device)
    logits = model(input_ids=ids, attention_mask=mask).logits.float() / max(temperature, 1e-6)
    logp = torch.log_softmax(logits, -1)
    ent = -(logp.exp() * logp).sum(-1)  # [rows, width]: position t predicts token t + 1
    return [ent[i, s - 1 : len(r) - 1].tolist() for i, (r, s) in enumerate(zip(rows, starts, strict=True))]


def etmr_rollout(forks: int, branches: int, group: int | None = None):
    """ETTRL's Entropy-fork Tree Majority Rollout (ETMR): each group of G rollouts is M = G / (1 + B N)
    trees. A tree is one full sample; at its N highest-entropy tokens it forks B new branches, each
    sampled from that point to the end (the forked token is resampled) and sharing the tree's prefix, so a
    group costs about (1 + B N / 2) / (1 + B N) of the tokens of G independent samples. All leaves vote
    (TTRL's majority label) and all are trained. Sampled with steerable's generator (TRL's
    ``rollout_func``)."""
    if forks < 1 or branches < 1:
        raise ConfigError(f"ETMR needs forks >= 1 and branches >= 1 (got {forks}, {branches})")
    per_tree = 1 + forks * branches

    def check(g: int) -> None:
        if g % per_tree:
            raise ConfigError(
                f"ETMR with {forks} forks x {branches} branches makes trees of {per_tree} rollouts: "
                f"--group {g} is not a multiple of {per_tree}"
            )

    if group is not None:  # known up front (steerable train rl): fail before any sampling
        check(group)

    def rollout(prompts, trainer):
        from steerable.lm.local import LocalGenerator
        from steerable.lm.sequences import Sequences
        from steerable.lm.types import SamplingParams

        g = _group_size(trainer)
        check_groups(prompts, g, "ETMR")
        check(g)
        trees = g // per_tree
        cap = trainer.max_completion_length
        params = SamplingParams(temperature=trainer.temperature, max_new_tokens=cap)
        model = trainer.model
        with eval_mode(model):
            gen = LocalGenerator(model, trainer.processing_class, chat_template="never")
            unique = prompts[::g]
            pids = [gen.encode(p) for p in unique]
            # 1. the trees: M full samples per prompt
            seqs = gen.start(unique, n=trees)
            first = gen.step(seqs, params)
            tree_ids = [list(t) for t in first.token_ids]
            tree_lps = [list(x) for x in first.logprobs]
            owner = [k // trees for k in range(len(tree_ids))]
            ents = token_entropies(
                model,
                [pids[o] + t for o, t in zip(owner, tree_ids, strict=True)],
                [len(pids[o]) for o in owner],
                trainer.temperature,
            )
            # 2. the branches: B new continuations at each of the N highest-entropy tokens of every tree
            plan = [(k, j) for k in range(len(tree_ids)) for j in fork_points(ents[k], forks) for _ in range(branches)]
            rows = [pids[owner[k]] + tree_ids[k][:j] for k, j in plan]
            bseqs = Sequences(rows, [len(r) for r in rows], list(range(len(rows))))
            second = gen.step(bseqs, params, max_tokens=cap - min(j for _, j in plan))
        completion_ids, logprobs = [], []
        sampled = sum(len(t) for t in tree_ids)
        b = 0
        for k in range(len(tree_ids)):  # prompt-major: each prompt's trees, each tree then its branches
            completion_ids.append(tree_ids[k])
            logprobs.append(tree_lps[k])
            for _ in range(forks * branches):
                _, j = plan[b]
                new = list(second.token_ids[b])[: cap - j]
                sampled += len(new)
                completion_ids.append(tree_ids[k][:j] + new)
                logprobs.append(tree_lps[k][:j] + list(second.logprobs[b])[: len(new)])
                b += 1
        # tokens sampled for the group over the tokens of its leaves (what independent samples would cost)
        share = sampled / max(1, sum(len(c) for c in completion_ids))
        trainer._metrics["train" if model.training else "eval"]["etmr/token_share"].append(share)
        return {
            "prompt_ids": [pids[i // g] for i in range(len(prompts))],
            "completion_ids": completion_ids,
            "logprobs": logprobs,
        }

    return rollout
