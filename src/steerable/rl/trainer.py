"""A thin subclass of TRL's ``GRPOTrainer``: our advantage estimators and policy losses, by name.

TRL samples, scores and trains; we replace two things and leave the rest:

- after TRL has scored a batch, the advantages come from
  :data:`steerable.rl.algos.ADVANTAGES` (given the weighted rewards, which
  rollouts are correct, their lengths), grouped per prompt and checked;
- the loss comes from :data:`steerable.rl.algos.POLICY_LOSSES` on TRL's
  per-token log-probabilities (``loss="trl"`` keeps TRL's own).

Per step we log reward, accuracy, entropy, mean length, clipped fraction and
the covariance statistics of Clip-Cov / KL-Cov.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from steerable.errors import ConfigError
from steerable.rl.algos import ADVANTAGES, POLICY_LOSSES, RLConfig, entropy_stats


@dataclass(frozen=True)
class Algo:
    advantage: str = "grpo"
    loss: str = "grpo"  # or "trl": TRL's own loss_type
    reward: str = "exact"  # default reward spec for the algorithm
    iterations: int = 1  # optimisation steps per generated batch (MDPO > 1)
    config: dict = field(default_factory=dict)  # RLConfig overrides
    rollout: str | None = None  # "icpo": one rollout per group from a demo-augmented prompt; "etmr": trees
    # optimiser steps per generated batch, one per mini-batch (verl: train batch / PPO mini-batch). Only
    # then are later updates off-policy, the regime Clip-Cov / KL-Cov act in: on-policy, KL-Cov *is* the
    # plain policy gradient and Clip-Cov detaches a handful of tokens.
    minibatches: int = 1


ALGOS: dict[str, Algo] = {
    "grpo": Algo(),
    "dr_grpo": Algo("dr_grpo", "dr_grpo"),
    "dapo": Algo("grpo", "dapo", config={"eps_high": 0.28}),
    "clip_cov": Algo("grpo", "clip_cov", minibatches=4),
    "kl_cov": Algo("grpo", "kl_cov", minibatches=4),
    "mdpo": Algo("grpo", "mdpo", iterations=4),
    "l_grpo": Algo("l_grpo", "grpo"),
    "efficiency": Algo("efficiency", "grpo"),
    "aspo": Algo("aspo", "grpo"),
    "ttrl": Algo("grpo", "grpo", reward="majority"),
    "icpo": Algo("grpo", "icpo", rollout="icpo"),
    "brpo": Algo("brpo", "grpo"),
    "igpo": Algo("igpo", "grpo"),  # turns = lines; information gain about the true answer per turn
    "ettrl": Algo("ettrl", "grpo", reward="majority", rollout="etmr"),  # ETMR trees + Adv-Res
    "trl_grpo": Algo("grpo", "trl"),  # TRL's own GRPO loss, for comparison (rl_overhead)
}


def make_trainer_class():
    """The subclass, defined when TRL is importable (extra ``[rl]``)."""
    try:
        from trl import GRPOTrainer
    except ImportError:
        raise ConfigError("RL needs TRL: pip install 'steerable[rl]'") from None

    class SteerableGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, algo: Algo, rl_config: RLConfig, extract, seed: int = 0, **kwargs):
            super().__init__(*args, **kwargs)
            if algo.advantage not in ADVANTAGES:
                raise ConfigError(f"unknown advantage {algo.advantage!r}: use one of {', '.join(ADVANTAGES)}")
            if algo.loss != "trl" and algo.loss not in POLICY_LOSSES:
                raise ConfigError(f"unknown loss {algo.loss!r}: use one of {', '.join(POLICY_LOSSES)}, trl")
            if self.accelerator.num_processes != 1:
                raise ConfigError("steerable's RL losses run on one process for now: launch without accelerate")
            self.algo, self.rl_config, self.extract = algo, rl_config, extract
            self._rng = torch.Generator().manual_seed(seed)
            self._stash: dict = {}

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._last_rewards = rewards  # [N, reward functions]: TRL turns them into advantages, we redo that
            texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
            self._stash = {
                "prompts": [p if isinstance(p, str) else repr(p) for p in prompts],
                "texts": texts,
                "lengths": torch.tensor([len(c) for c in completion_ids_list], dtype=torch.float32),
                "answers": [x.get("answer") for x in inputs],
            }
            return rewards

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            st = self._stash
            mode = "train" if self.model.training else "eval"
            g = self.num_generations if mode == "train" else self.num_generations_eval
            rewards_per_func = self._last_rewards
            rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device)).nansum(dim=1).cpu()
            answers = st["answers"]
            got = [self.extract(t) for t in st["texts"]]
            if all(a is None for a in answers):  # no labels (TTRL): correctness against the group's majority
                from steerable.rl.algos import majority_labels

                answers = majority_labels(got, g)
            correct = torch.tensor([a is not None and str(x) == str(a) for x, a in zip(got, answers, strict=True)])
            positions = torch.tensor(
                [float(t.find("A:")) if "A:" in t else float(len(t)) for t in st["texts"]]
            )  # ASPO's position: where the answer line starts
            extra = {}
            if self.algo.advantage == "brpo":
                extra = self._budget_cuts(st, answers, out["completion_ids"], correct)
            if self.algo.advantage == "ettrl":
                extra = {"entropies": self._rollout_entropies(out)}
            if self.algo.advantage == "igpo":
                extra = self._information_gains(st, answers, out)
            adv, metrics = ADVANTAGES[self.algo.advantage](
                rewards,
                g,
                self.rl_config,
                prompts=st["prompts"],
                correct=correct,
                lengths=st["lengths"],
                positions=positions,
                **extra,
            )
            off = getattr(self, "_off_policy", None)
            if off is not None:  # ICPO: a correct demo-guided rollout earns 1 + max(0, 1 - t/400)
                bonus = max(0.0, 1.0 - self.state.global_step / 400)
                rewards = rewards + bonus * (off & correct).float()
                adv, metrics = ADVANTAGES[self.algo.advantage](
                    rewards, g, self.rl_config, prompts=st["prompts"], correct=correct, lengths=st["lengths"]
                )
                out["off_policy"] = off.to(out["advantages"].device)
                self._metrics[mode]["icpo/demo_accuracy"].append(float(correct[off].float().mean()))
                self._off_policy = None
            out["advantages"] = adv.to(out["advantages"].device, out["advantages"].dtype)
            m = self._metrics[mode]
            m["accuracy"].append(float(correct.float().mean()))
            m["mean_length"].append(float(st["lengths"].mean()))
            for k, v in metrics.items():
                m[f"adv/{k}"].append(v)
            return out

        @torch.no_grad()
        def _rollout_entropies(self, out) -> torch.Tensor:
            """Mean token entropy of every rollout under the current policy (one extra forward pass)."""
            ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
            mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
            _, ent, _ = self._get_per_token_logps_and_entropies(
                self.model, ids, mask, out["completion_ids"].size(1), compute_entropy=True
            )
            cm = out["completion_mask"].to(ent.dtype)
            return ((ent * cm).sum(1) / cm.sum(1).clamp(min=1)).cpu()

        @torch.no_grad()
        def _information_gains(self, st, answers, out) -> dict:
            """IGPO's turn rewards: turns are lines; after each line the policy's probability of the true
            answer (``igpo_probe`` + answer, teacher-forced, geometric mean over its tokens) is read in one
            batched pass; a turn earns the rise it caused. Also the turn of every completion token."""
            if any(a is None for a in answers):
                raise ConfigError("igpo needs the true answers (its reward is the gain in their probability)")
            tok = self.processing_class
            comp, cmask = out["completion_ids"], out["completion_mask"]
            newline: dict[int, int] = {}
            turns = torch.full(comp.shape, -1, dtype=torch.long)
            probes, counts = [], []
            probe = tok(self.rl_config.igpo_probe, add_special_tokens=False)["input_ids"]
            for i in range(comp.shape[0]):
                prompt = out["prompt_ids"][i][out["prompt_mask"][i].bool()].tolist()
                ids = comp[i][cmask[i].bool()].tolist()
                ans = tok(str(answers[i]), add_special_tokens=False)["input_ids"]
                t, ends = 0, [0]
                for j, x in enumerate(ids):
                    if x not in newline:
                        newline[x] = tok.decode([x]).count("\n")
                    turns[i, j] = t
                    if newline[x]:
                        t += 1
                        ends.append(j + 1)
                if ends[-1] == len(ids):  # the completion ends on a newline: no turn after it
                    ends.pop()
                # the state before each turn: before turn 0, after turn 0, ...
                probes.extend((prompt + ids[:e] + probe, ans) for e in ends)
                counts.append(len(ends))
            probs = torch.tensor(_answer_probabilities(self.model, probes)).split(counts)
            gains = [p[1:] - p[:-1] for p in probs]  # one per turn before the last
            return {"gains": gains, "token_turns": turns}

        def _budget_cuts(self, st, answers, completion_ids, correct, parts: int = 4) -> dict:
            """BRPO's cuts: at budgets L_max·s/S the thinking so far + an answer prompt, answered greedily."""
            from steerable.lm.local import LocalGenerator
            from steerable.lm.types import SamplingParams

            length = completion_ids.shape[1]
            budgets = [round(self.max_completion_length * (s + 1) / parts) for s in range(parts)]
            tok = self.processing_class
            n = len(st["texts"])
            cut_rewards = torch.zeros(n, parts)
            cuts = torch.zeros(n, parts, dtype=torch.long)
            asks, where = [], []
            for i in range(n):
                ids = completion_ids[i, : int(st["lengths"][i])].tolist()
                for s, b in enumerate(budgets):
                    cuts[i, s] = min(b, len(ids)) if s < parts - 1 else len(ids)
                    if b >= len(ids):  # the rollout ended before this budget: its own answer counts
                        cut_rewards[i, s] = float(correct[i])
                    else:
                        text = tok.decode(ids[:b], skip_special_tokens=True)
                        asks.append(st["prompts"][i] + text.rsplit("\n", 1)[0] + "\nA: ")
                        where.append((i, s))
            if asks:
                with eval_mode(self.model):
                    gen = LocalGenerator(self.model, tok, chat_template="never")
                    outs = gen.generate(asks, SamplingParams(temperature=0, max_new_tokens=8, stop=("\n",)))
                for (i, s), o in zip(where, outs, strict=True):
                    got = self.extract("A: " + o.text)
                    cut_rewards[i, s] = float(answers[i] is not None and str(got) == str(answers[i]))
            return {
                "cut_rewards": cut_rewards,
                "cuts": cuts,
                "priors": torch.full((parts,), 1.0 / parts),
                "length": length,
            }

        def _compute_loss(self, model, inputs):
            if self.algo.loss == "trl":
                return super()._compute_loss(model, inputs)
            prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
            completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
            input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
            attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
            logps, entropies, _ = self._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True
            )
            old = inputs.get("old_per_token_logps")
            old = logps.detach() if old is None else old
            mask = completion_mask.to(logps.dtype)
            loss, metrics = POLICY_LOSSES[self.algo.loss](
                logps,
                old,
                inputs["advantages"],
                mask,
                self.rl_config,
                generator=self._rng,
                off_policy=inputs.get("off_policy"),
            )
            if self.beta != 0.0:  # TRL's KL to the reference model, as its own loss adds it
                ref = inputs["ref_per_token_logps"]
                kl = torch.exp(ref - logps) - (ref - logps) - 1
                loss = loss + self.beta * ((kl * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
            mode = "train" if self.model.training else "eval"
            m = self._metrics[mode]
            for k, v in metrics.items():
                m[f"loss/{k}"].append(v)
            m["entropy"].append(entropy_stats(entropies, mask)["entropy"])
            if mode == "train":
                loss = loss / self.current_gradient_accumulation_steps
            return loss

    return SteerableGRPOTrainer


def _right_padded(rows: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one right-padded batch and its attention mask."""
    ids = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, device=device)
        mask[i, : len(r)] = 1
    return ids, mask


@torch.no_grad()
def _answer_probabilities(model, probes: list[tuple[list[int], list[int]]], batch: int = 256) -> list[float]:
    """``exp(mean log p(answer tokens | context))`` for each ``(context, answer)``, in batches."""
    dev = next(model.parameters()).device
    out: list[float] = []
    with eval_mode(model):
        for k in range(0, len(probes), batch):
            chunk = probes[k : k + batch]
            ids, mask = _right_padded([c + a for c, a in chunk], dev)
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
            for i, (c, a) in enumerate(chunk):
                pos = torch.arange(len(c) - 1, len(c) + len(a) - 1, device=dev)
                lp = logp[i, pos, torch.tensor(a, device=dev)]
                out.append(float(lp.mean().exp()))
    return out


def rl_config_for(algo: Algo, **overrides) -> RLConfig:
    return replace(RLConfig(), **{**algo.config, **overrides})


def _check_groups(prompts, g: int, name: str) -> None:
    if len(prompts) % g:
        raise ConfigError(f"{name} needs whole groups: {len(prompts)} prompts for groups of {g}")
    for i in range(0, len(prompts), g):
        if any(p != prompts[i] for p in prompts[i : i + g]):
            raise ConfigError(f"{name} needs each prompt's rollouts side by side")


@contextmanager
def eval_mode(model):
    """The model in eval mode (sampling, probing), back to its former mode afterwards, exceptions too."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def icpo_rollout(demo: str):
    """ICPO's mixed group ("Think Outside the Policy"): G - 1 rollouts of each prompt on-policy and one
    sampled after a one-shot demonstration (``demo`` + prompt), then re-attached to the plain prompt and
    marked off-policy for the shaped loss. Sampled with steerable's generator (TRL's ``rollout_func``)."""

    def rollout(prompts, trainer):
        from steerable.lm.local import LocalGenerator
        from steerable.lm.types import SamplingParams

        g = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        _check_groups(prompts, g, "ICPO")
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
        trainer._off_policy = torch.tensor(off)
        return {
            "prompt_ids": [gen.encode(p) for p in prompts],  # re-attached: every row is trained on its plain prompt
            "completion_ids": completion_ids,
            "logprobs": logprobs,
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
    ids, mask = _right_padded(rows, next(model.parameters()).device)
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
        from steerable.lm.local import LocalGenerator, Sequences
        from steerable.lm.types import SamplingParams

        g = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        _check_groups(prompts, g, "ETMR")
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
