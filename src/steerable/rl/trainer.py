"""A thin subclass of TRL's ``GRPOTrainer``: our advantage estimators and policy losses, by name.

TRL samples, scores and trains; we replace two things and leave the rest:

- after TRL has scored a batch (and, with DAPO's dynamic sampling, after groups without a reward spread
  were replaced by groups of new prompts), the advantages come from
  :data:`steerable.rl.algos.ADVANTAGES`, given exactly the inputs the estimator declares
  (:mod:`steerable.rl.inputs`);
- the loss comes from :data:`steerable.rl.algos.POLICY_LOSSES` on TRL's per-token log-probabilities
  (``loss="trl"`` keeps TRL's own), plus the entropy bonus when ``entropy_coef`` > 0.

Per step we log reward, accuracy, entropy, mean length, clipped fraction, the estimator's and the loss's
statistics and, with dynamic sampling, how many groups were refilled and dropped. :class:`RunLog` writes
those rows to ``metrics.jsonl`` and keeps a ``steerable train rl`` run within its time budget.

TRL is the ``[rl]`` extra: without it, importing this module is one ConfigError line saying so
(:mod:`steerable.rl.run` imports it only when a run starts).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from steerable.errors import ConfigError
from steerable.rl import batch as rows
from steerable.rl.algos import (
    ADVANTAGES,
    POLICY_LOSSES,
    Algo,
    RLConfig,
    check_inputs,
    declared_inputs,
    entropy_bonus,
)
from steerable.rl.core import flat_groups, masked_mean
from steerable.rl.inputs import AT_LOSS_TIME, PROVIDERS, Batch, BatchInputs, Context
from steerable.rl.session import EvalTimes

try:
    from transformers import TrainerCallback
    from trl import GRPOTrainer
except ImportError:
    raise ConfigError("RL needs TRL: pip install 'steerable[rl]'") from None

__all__ = ["RunLog", "SteerableGRPOTrainer"]


@dataclass
class _Sampled:
    """The per-row facts of one generation round that TRL's batch dict does not keep."""

    prompts: list[str]
    texts: list[str]
    completion_ids: list[list[int]]
    answers: list[str | None]
    rewards: torch.Tensor  # [B]
    off_policy: torch.Tensor  # [B] bool
    solved: torch.Tensor  # [B] the environment's verdict (agent rollouts: 1 or 0; otherwise nan)

    def select(self, idx: list[int]) -> _Sampled:
        return _Sampled(
            [self.prompts[i] for i in idx],
            [self.texts[i] for i in idx],
            [self.completion_ids[i] for i in idx],
            [self.answers[i] for i in idx],
            self.rewards[idx],
            self.off_policy[idx],
            self.solved[idx],
        )

    @staticmethod
    def concat(parts: list[_Sampled]) -> _Sampled:
        return _Sampled(
            [p for s in parts for p in s.prompts],
            [t for s in parts for t in s.texts],
            [c for s in parts for c in s.completion_ids],
            [a for s in parts for a in s.answers],
            torch.cat([s.rewards for s in parts]),
            torch.cat([s.off_policy for s in parts]),
            torch.cat([s.solved for s in parts]),
        )


class SteerableGRPOTrainer(GRPOTrainer):
    """TRL's GRPO trainer with the advantages and the loss of ``algo`` (:data:`steerable.rl.algos.ALGOS`)."""

    def __init__(
        self,
        *args,
        algo: Algo,
        rl_config: RLConfig,
        extract,
        seed: int = 0,
        progress: Callable[[], float] | None = None,
        **kwargs,
    ):
        check_inputs(algo)
        super().__init__(*args, **kwargs)
        if self.accelerator.num_processes != 1:
            raise ConfigError("steerable's RL losses run on one process for now: launch without accelerate")
        self.algo, self.rl_config, self.extract = algo, rl_config, extract
        self._progress = progress
        self._rng = torch.Generator().manual_seed(seed)
        self._refill_rng = torch.Generator().manual_seed(seed + 1)
        self._stash: dict = {}

    # ---- sampling ------------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._stash = {
            "rewards_per_func": rewards,  # [N, reward functions]: TRL turns them into advantages, we redo that
            "prompts": [p if isinstance(p, str) else repr(p) for p in prompts],
            "texts": [c if isinstance(c, str) else c[-1]["content"] for c in completions],
            "completion_ids": [list(c) for c in completion_ids_list],
        }
        return rewards

    def _group_size(self) -> int:
        return self.num_generations if self.model.training else self.num_generations_eval

    def _sample(self, inputs) -> tuple[dict, _Sampled]:
        """One round: TRL generates and scores; we keep what the estimators need. TRL hands a ``rollout_func``
        the prompts only: the round's dataset rows wait in ``rollout_rows`` for one that needs more (the agent
        rollouts read their tasks there)."""
        self.rollout_rows = inputs
        out = super()._generate_and_score_completions(inputs)
        st = self._stash
        per_func = st["rewards_per_func"]
        rewards = (per_func * self.reward_weights.to(per_func.device)).nansum(dim=1).cpu()
        answers = [x.get("answer") for x in inputs]
        if all(a is None for a in answers):  # no labels (TTRL): correctness against the group's majority
            from steerable.rl.algos import majority_labels

            answers = majority_labels([self.extract(t) for t in st["texts"]], self._group_size())
        off = torch.tensor([bool(x.get("off_policy", False)) for x in inputs])
        solved = torch.tensor([float("nan") if x.get("solved") is None else float(x["solved"]) for x in inputs])
        return out, _Sampled(st["prompts"], st["texts"], st["completion_ids"], answers, rewards, off, solved)

    def _fresh_inputs(self, n_groups: int) -> list[dict]:
        """``n_groups`` new training prompts, each repeated G times (DAPO refills from the data stream)."""
        idx = torch.randint(len(self.train_dataset), (n_groups,), generator=self._refill_rng).tolist()
        return [dict(self.train_dataset[i]) for i in idx for _ in range(self._group_size())]

    def _dynamic_sampling(self, out: dict, sampled: _Sampled, mode: str) -> tuple[dict, _Sampled]:
        """DAPO's dynamic sampling: a group whose rewards are all equal has zero advantage and no gradient;
        replace it by a group of a new prompt, for up to ``dynamic_sampling_rounds`` rounds, then drop the
        groups still without spread. Logged: groups refilled and dropped. The step's other statistics stay
        those of the first round (the policy on fresh prompts, unfiltered)."""
        g = self._group_size()
        metrics = self._metrics[mode]
        before = {k: len(v) for k, v in metrics.items()}
        flat = flat_groups(sampled.rewards, g)
        parts = [(out, sampled, ~flat)]
        missing, rounds, refilled = int(flat.sum()), 0, 0
        while missing and rounds < self.rl_config.dynamic_sampling_rounds:
            rounds += 1
            o2, s2 = self._sample(self._fresh_inputs(missing))
            f2 = flat_groups(s2.rewards, g)
            parts.append((o2, s2, ~f2))
            refilled += int((~f2).sum())
            missing = int(f2.sum())
        for k in list(metrics):  # the refill rounds' own statistics would bias the step's (kept: counts)
            if k in before:
                del metrics[k][before[k] :]
            else:
                del metrics[k]
        metrics["dynamic/groups_refilled"].append(float(refilled))
        metrics["dynamic/groups_dropped"].append(float(missing))
        metrics["dynamic/rounds"].append(float(rounds))
        if refilled == 0 and bool(flat.all()):  # nothing to learn from this step: keep it, all zero
            return out, sampled
        keep = [(o, s, [i for i in range(len(s.rewards)) if bool(k[i // g])]) for o, s, k in parts if bool(k.any())]
        pad = self.processing_class.pad_token_id or 0
        joined = rows.concat([rows.select(o, idx) for o, _, idx in keep], pad)
        return joined, _Sampled.concat([s.select(idx) for _, s, idx in keep])

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        g = self._group_size()
        out, sampled = self._sample(inputs)
        first = sampled
        if self.rl_config.dynamic_sampling and mode == "train":
            out, sampled = self._dynamic_sampling(out, sampled, mode)
        mask = out["prompt_mask"].bool()
        batch = Batch(
            group_size=g,
            prompts=sampled.prompts,
            texts=sampled.texts,
            prompt_ids=[out["prompt_ids"][i][mask[i]].tolist() for i in range(len(sampled.texts))],
            completion_ids=sampled.completion_ids,
            answers=sampled.answers,
            rewards=sampled.rewards,
            width=out["completion_ids"].shape[1],
            off_policy=sampled.off_policy,
            solved=None if bool(sampled.solved.isnan().any()) else sampled.solved.bool(),
            env_mask=_env_mask(out, sampled.completion_ids),
        )
        x = BatchInputs(self._context(), batch)
        estimator = ADVANTAGES[self.algo.advantage]
        kw = {k: x.get(k) for k in declared_inputs(estimator)}
        adv, metrics = estimator(batch.rewards, g, self.rl_config, **kw)
        dev = out["completion_ids"].device
        out["advantages"] = rows.token_level(adv, out["completion_mask"]).to(dev)
        if self.algo.loss != "trl":
            for k in declared_inputs(POLICY_LOSSES[self.algo.loss]):
                if k not in AT_LOSS_TIME:
                    v = x.get(k)
                    out[k] = (v if isinstance(v, torch.Tensor) else torch.tensor(v)).to(dev)
        loss_mask = x.loss_mask()
        if loss_mask is not None:
            out["tool_mask"] = out.get("tool_mask", torch.ones_like(out["completion_mask"])) * loss_mask.to(dev)
        for extra in x.extra_rows():
            out = self._append_rows(out, extra)
        m = self._metrics[mode]
        ok = PROVIDERS["correct"](BatchInputs(x.ctx, _as_batch(first, g)))  # the first round: unfiltered
        m["accuracy"].append(float(ok.float().mean()))
        m["mean_length"].append(sum(len(c) for c in first.completion_ids) / max(1, len(first.completion_ids)))
        if bool(first.off_policy.any()):
            m["icpo/demo_accuracy"].append(float(ok[first.off_policy].float().mean()))
        for k, v in {**metrics, **x.metrics}.items():
            m[k if "/" in k else f"adv/{k}"].append(v)
        return rows._recount(out)

    def _context(self) -> Context:
        per_batch = self.args.steps_per_generation * self.num_iterations
        done = self.state.global_step // max(1, per_batch)
        if self._progress is not None:
            progress = self._progress()
        else:
            progress = self.state.global_step / self.state.max_steps if self.state.max_steps else 0.0
        return Context(
            model=self.model,
            tokenizer=self.processing_class,
            cfg=self.rl_config,
            extract=self.extract,
            temperature=self.temperature,
            max_completion=self.max_completion_length,
            batches_done=done,
            progress=min(max(progress, 0.0), 1.0),
        )

    @torch.no_grad()
    def _append_rows(self, out: dict, extra) -> dict:
        """Rows an input adds (BRPO's sampled answers) as a batch of their own, joined to ``out``."""
        dev = out["completion_ids"].device
        pad = self.processing_class.pad_token_id or 0
        n = len(extra.prompt_ids)
        p_width = max(len(p) for p in extra.prompt_ids)
        c_width = max(1, max(len(c) for c in extra.completion_ids))
        new = {
            "prompt_ids": torch.full((n, p_width), pad, dtype=torch.long),
            "prompt_mask": torch.zeros(n, p_width, dtype=torch.long),
            "completion_ids": torch.full((n, c_width), pad, dtype=torch.long),
            "completion_mask": torch.zeros(n, c_width, dtype=torch.long),
        }
        for i, (p, c) in enumerate(zip(extra.prompt_ids, extra.completion_ids, strict=True)):
            new["prompt_ids"][i, p_width - len(p) :] = torch.tensor(p)
            new["prompt_mask"][i, p_width - len(p) :] = 1
            new["completion_ids"][i, : len(c)] = torch.tensor(c, dtype=torch.long)
            new["completion_mask"][i, : len(c)] = 1
        new = {k: v.to(dev) for k, v in new.items()}
        new["advantages"] = extra.advantages.float().to(dev).unsqueeze(1).expand(-1, c_width).clone()
        ids = torch.cat([new["prompt_ids"], new["completion_ids"]], dim=1)
        att = torch.cat([new["prompt_mask"], new["completion_mask"]], dim=1)
        for key, model in (("old_per_token_logps", self.model), ("ref_per_token_logps", self.ref_model)):
            if key in out:
                if model is None:
                    raise ConfigError("extra training rows with --beta > 0 need a reference model")
                new[key], _, _ = self._get_per_token_logps_and_entropies(model, ids, att, c_width)
        if "tool_mask" not in out:  # the loss mask also carries the rows' weights
            out["tool_mask"] = torch.ones_like(out["completion_mask"], dtype=torch.float32)
        for k, v in out.items():
            if k in new or k == "num_items_in_batch":
                continue
            if k == "tool_mask":
                new[k] = extra.weights.to(dev, v.dtype).unsqueeze(1).expand(-1, c_width).clone()
            elif k == "sampling_per_token_logps":
                new[k] = torch.zeros(n, c_width, dtype=v.dtype, device=dev)
            elif isinstance(v, torch.Tensor) and v.dim() == 1:  # a per-row flag: off for the new rows
                new[k] = torch.zeros(n, dtype=v.dtype, device=dev)
            else:
                new[k] = v
        new["num_items_in_batch"] = out["num_items_in_batch"]
        if "row_kind" not in out:
            out["row_kind"] = torch.zeros(len(out["completion_ids"]), dtype=torch.long, device=dev)
        # the loss runs each kind through the model on its own, trimmed: by context length in quarters,
        # so that a short context is not padded to the longest one
        lens = torch.tensor([len(p) for p in extra.prompt_ids], dtype=torch.float32)
        edges = lens.quantile(torch.tensor([0.25, 0.5, 0.75]))
        kind = 1 + int(out["row_kind"].max()) + torch.bucketize(lens, edges)
        new["row_kind"] = kind.to(dev)
        return rows.concat([out, new], pad)

    # ---- the loss --------------------------------------------------------------------------------

    def _logps_and_entropies(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities and entropies ``[B, T]``; rows of different kinds (rollouts, BRPO's
        short answer rows behind long prompts) go through the model separately, each trimmed to its own
        widths instead of the whole batch's."""
        p_ids, p_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        c_ids, c_mask = inputs["completion_ids"], inputs["completion_mask"]
        kinds = inputs.get("row_kind")
        parts = [torch.arange(len(c_ids), device=c_ids.device)] if kinds is None else []
        if kinds is not None:
            parts = [(kinds == k).nonzero().flatten() for k in kinds.unique()]
        logps = torch.zeros(c_ids.shape, device=c_ids.device)
        ents = torch.zeros(c_ids.shape, device=c_ids.device)
        for idx in parts:
            pm, cm = p_mask[idx], c_mask[idx]
            p_from = int((pm.sum(0) > 0).nonzero().min()) if bool(pm.any()) else pm.shape[1] - 1
            c_to = int((cm.sum(0) > 0).nonzero().max()) + 1 if bool(cm.any()) else 1
            ids = torch.cat([p_ids[idx, p_from:], c_ids[idx, :c_to]], dim=1)
            att = torch.cat([pm[:, p_from:], cm[:, :c_to]], dim=1)
            lp, ent, _ = self._get_per_token_logps_and_entropies(model, ids, att, c_to, compute_entropy=True)
            if len(parts) == 1:
                return torch.nn.functional.pad(lp, (0, c_ids.shape[1] - c_to)), torch.nn.functional.pad(
                    ent, (0, c_ids.shape[1] - c_to)
                )
            logps = logps.index_put((idx,), torch.nn.functional.pad(lp, (0, c_ids.shape[1] - c_to)))
            ents = ents.index_put((idx,), torch.nn.functional.pad(ent, (0, c_ids.shape[1] - c_to)))
        return logps, ents

    def _compute_loss(self, model, inputs):
        if self.algo.loss == "trl":
            return super()._compute_loss(model, inputs)
        logps, entropies = self._logps_and_entropies(model, inputs)
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        mask = inputs["completion_mask"].to(logps.dtype)
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"].to(logps.dtype)
        fn = POLICY_LOSSES[self.algo.loss]
        kw = {}
        for k in declared_inputs(fn):
            if k == "generator":
                v = self._rng
            elif k == "capo_shifts":
                v = self._capo_shifts(model, inputs, mask)
            else:
                v = inputs[k]
            kw[k] = v.item() if isinstance(v, torch.Tensor) and v.dim() == 0 else v
        loss, metrics = fn(logps, old, inputs["advantages"], mask, self.rl_config, **kw)
        if self.rl_config.entropy_coef > 0:
            loss = loss - entropy_bonus(entropies, mask, self.rl_config)
        if self.beta != 0.0:  # TRL's KL to the reference model, as its own loss adds it
            ref = inputs["ref_per_token_logps"]
            kl = torch.exp(ref - logps) - (ref - logps) - 1
            loss = loss + self.beta * ((kl * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
        mode = "train" if self.model.training else "eval"
        m = self._metrics[mode]
        for k, v in metrics.items():
            m[k if "/" in k else f"loss/{k}"].append(v)
        m["entropy"].append(float(masked_mean(entropies.detach(), mask)))
        if mode == "train":
            loss = loss / self.current_gradient_accumulation_steps
        return loss

    def _capo_shifts(self, model, inputs, mask: torch.Tensor):
        """CAPO's per-token predictions at the step about to be taken (:mod:`steerable.rl.capo`): the LM head's
        inputs from one more forward pass without gradients, at the current learning rate."""
        from steerable.rl.capo import CapoCurvature, head_inputs

        if getattr(self, "_capo", None) is None:
            a = self.args
            self._capo = CapoCurvature(self.rl_config.capo_direction, a.adam_beta1, a.adam_beta2, a.adam_epsilon)
        c_ids = inputs["completion_ids"]
        ids = torch.cat([inputs["prompt_ids"], c_ids], dim=1)
        att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        h, logits = head_inputs(model, ids, att, c_ids.shape[1])
        lr = self.lr_scheduler.get_last_lr()[0] if self.lr_scheduler is not None else self.args.learning_rate
        adv = rows.token_level(inputs["advantages"], inputs["completion_mask"]).to(h.device)
        return self._capo.shifts(h, logits, c_ids, adv, mask, lr, self.rl_config)


def _as_batch(s: _Sampled, g: int) -> Batch:
    """The facts the per-rollout providers read (correctness), for statistics of one round."""
    solved = None if bool(s.solved.isnan().any()) else s.solved.bool()
    return Batch(g, s.prompts, s.texts, [], s.completion_ids, s.answers, s.rewards, 0, s.off_policy, solved)


def _env_mask(out: dict, completion_ids: list[list[int]]) -> list[list[int]] | None:
    """Each rollout's environment mask (1: the model's token, 0: the environment's), from the ``tool_mask``
    TRL built out of a ``rollout_func``'s ``env_mask``; None when the rollouts had none."""
    mask = out.get("tool_mask")
    if mask is None:
        return None
    return [mask[i, : len(c)].int().tolist() for i, c in enumerate(completion_ids)]


class RunLog(TrainerCallback):
    """A ``steerable train rl`` run's bookkeeping: a ``metrics.jsonl`` row per logged step (with the held-in
    accuracy every ``eval_every`` steps), a stop once ``budget`` seconds are spent (after a checkpoint), and
    ``clock`` saved with every checkpoint so that a resumed run knows the time already spent."""

    def __init__(self, metrics: Path, clock, budget: float | None, eval_every: int, held_in: Callable[[], float],
                 show: Callable[[int, str], None]) -> None:  # fmt: skip
        self.metrics, self.clock, self.budget, self.eval_every = metrics, clock, budget, eval_every
        self.held_in, self.show = held_in, show
        self.times = EvalTimes()

    def on_log(self, args, state, control, logs=None, **kw):
        if not logs or "loss" not in logs and "reward" not in logs:
            return
        row = {"step": state.global_step, "seconds": round(self.clock.seconds(), 1)}
        row["cpu_seconds"] = self.times.cpu()  # this process's CPU time: robust to load
        row.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
        if self.eval_every and state.global_step % self.eval_every == 0:
            row["held_in_accuracy"] = self.times.timed(self.held_in)
        # the evaluations' share of `seconds` and `cpu_seconds` (for curves of training time alone)
        row.update(self.times.totals())
        with self.metrics.open("a") as f:
            f.write(json.dumps(row) + "\n")
        info = f"reward {row.get('reward', float('nan')):.3f} entropy {row.get('entropy', float('nan')):.4f}"
        if "held_in_accuracy" in row:
            info += f" held-in {row['held_in_accuracy']:.1%}"
        self.show(state.global_step, info)

    def on_step_end(self, args, state, control, **kw):
        if self.budget is not None and self.clock.seconds() >= self.budget:
            control.should_training_stop = True
            control.should_save = True

    def on_save(self, args, state, control, **kw):
        self.clock.save()
