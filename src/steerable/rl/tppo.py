"""T-PPO ("Truncated Proximal Policy Optimization", Fan et al., ByteDance Seed 2025): ``--algo tppo``.

PPO with a critic whose rollouts never wait for the longest response:

- **windows**: every step, each of the B slots (``--prompts-per-step`` x ``--group``, one prompt each) generates
  at most ``l`` more tokens (``--set tppo_window=32``), then the policy is updated on those partial responses.
  A slot whose response ended (EOS or ``--max-completion``) is refilled with a new prompt at once, so every
  window samples B rows (:func:`refill`);
- **EGAE** (the paper's Extended GAE, its §3.1): over a window's new tokens
  ``Â_t = Σ_{k=0}^{n-1-t} (γλ)^k δ_{t+k}``, ``δ_t = r_t + γ V(s_{t+1}) − V(s_t)``, where the value after the
  window's last token is the bootstrap ``V(s_{t+l})`` if the response goes on, and 0 if it ended
  (:func:`extended_gae`); ``r_t`` is the verifier's reward on a response's last token, 0 elsewhere;
- **decoupled updates**: the policy's loss (the token-mean clipped surrogate, ``POLICY_LOSSES["ppo"]``) sees
  only each window's new tokens: prompt and earlier tokens are filtered out, and :func:`_window_pass` runs only
  the window with gradient, over the prefix's keys and values as constants. The critic is trained only on
  responses that completed in this window, on their Monte-Carlo returns ``G_t = γ^{T−1−t} R`` at every token
  (:func:`critic_targets`).

**The value head** (:class:`ValueHead`) is a ``Linear(hidden, 1)`` on the policy's last hidden state (after the
final norm), read at the position whose logits predict token t, so it gives ``V(s_t)`` of the prefix before
token t. It reads the hidden state *detached*: the critic's loss trains the head alone and never moves the
policy, and its own optimiser runs at ``--set tppo_critic_lr``. It is saved beside the model as
``value_head.safetensors`` (:func:`load_value_head`).

**Why not a GRPOTrainer subclass**: TRL's trainer generates whole responses for fixed groups of one prompt and
then trains on them; T-PPO's unit is a window of a batch whose rows start and end at different times, whose
advantages come from a critic (TRL 1.16 has neither a value-head model nor a PPO trainer any more), and whose
critic and policy see different tokens. So this is one small loop (nanoGPT-style) that reuses the rest of
``steerable train rl``: the tasks, reward functions, held-in evaluation, ``metrics.jsonl``, ``summary.json``,
``curves.png``, the time budget (:mod:`steerable.rl.run`), the registered PPO loss, steerable's generator and
TRL's ``selective_log_softmax`` / ``entropy_from_logits``.

**Where it differs from the paper** (also ``docs/differences.md``): the paper's critic is a separate LLM; here
it is a linear head on the policy's (detached) features, and the critic's targets are read off the features
each state had when its window was trained. Before every window the slots' prefixes are prefilled again with
the current weights (no KV cache kept across an update), so every token is sampled by the policy of its step;
the same prefill, copied, is the update's constant prefix, so the gradient through the prefix's keys and values
is not taken. Each window is trained once (one optimiser step; the ratio is 1, as ``grpo`` here with one
iteration). Defaults the paper's text did not give us verbatim (γ = 1, λ = 0.95: the VC-PPO/VAPO group's
settings, recalled) are marked so in the docs; its window (8k of 24k tokens, a third of the cap, recalled)
becomes 32 of 160 tokens on the built-in task. Advantages are not whitened by default (verl whitens GAE's;
``--set tppo_whiten=true``), so they keep the TD errors' scale. No resume: a rerun starts over.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

VALUE_HEAD_FILE = "value_head.safetensors"


# ---- the pure parts ------------------------------------------------------------------------------


def extended_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap: torch.Tensor,
    mask: torch.Tensor,
    ended: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """EGAE over one window: ``Â_t = Σ_k (γλ)^k δ_{t+k}``, ``δ_t = r_t + γ V_{t+1} − V_t`` (T-PPO §3.1).

    ``rewards``, ``values`` ``[B, L]``: the window's tokens left-aligned, ``mask`` 1 on the ``n_i`` real ones;
    ``values[i, t] = V(s_t)``, the state before token t. After the last real token the next value is
    ``bootstrap[i] = V(s_{t+l})`` (the state after the window's last token) where the response goes on, and 0
    where it ``ended`` ([B] bool). Returns the advantages and the λ-returns ``Â + V`` (``[B, L]``, 0 on padding).
    """
    b, width = values.shape
    n = mask.sum(1).long()
    adv = torch.zeros_like(values)
    running = torch.zeros(b, dtype=values.dtype)
    for t in reversed(range(width)):
        real = t < n
        last = t == n - 1
        nxt = values[:, t + 1] if t + 1 < width else torch.zeros(b, dtype=values.dtype)
        nxt = torch.where(last, torch.where(ended, torch.zeros_like(nxt), bootstrap), nxt)
        delta = rewards[:, t] + gamma * nxt - values[:, t]
        running = torch.where(last, delta, delta + gamma * lam * running)
        running = torch.where(real, running, torch.zeros_like(running))
        adv[:, t] = running
    return adv, (adv + values) * mask


def critic_targets(lengths: torch.Tensor, rewards: torch.Tensor, width: int, gamma: float) -> torch.Tensor:
    """Monte-Carlo returns of completed responses: ``G_t = γ^{T−1−t} R`` for t < T (the reward comes on the last
    token), 0 past the end; ``lengths`` and ``rewards`` ``[N]``, the result ``[N, width]``."""
    t = torch.arange(width).unsqueeze(0)
    steps = (lengths.unsqueeze(1) - 1 - t).clamp(min=0).to(rewards.dtype)
    return torch.where(t < lengths.unsqueeze(1), rewards.unsqueeze(1) * gamma**steps, torch.zeros(()))


@dataclass
class Slot:
    """One row of the batch: a prompt and its response so far."""

    prompt: list[int]
    answer: str | None
    text_prompt: str
    response: list[int]
    features: list[torch.Tensor] = field(default_factory=list)  # [n, hidden] per window: states before its tokens


def refill(slots: list[Slot], ended: list[bool], fresh) -> tuple[list[Slot], int]:
    """The batch after a window: every slot whose response ``ended`` takes a new prompt from ``fresh()``; the
    others keep theirs. Returns the slots (as many as before) and how many were refilled."""
    out = [fresh() if e else s for s, e in zip(slots, ended, strict=True)]
    return out, sum(ended)


class ValueHead(torch.nn.Module):
    """``V(s) = w·h + b`` on the policy's last hidden state ``h`` (detached: the critic trains the head only)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [..., hidden] -> [...]
        return self.linear(hidden.detach()).squeeze(-1)


def load_value_head(model_dir: str | Path) -> ValueHead:
    """The value head a ``--algo tppo`` run saved beside its model."""
    from safetensors.torch import load_file

    state = load_file(str(Path(model_dir) / VALUE_HEAD_FILE))
    head = ValueHead(state["linear.weight"].shape[1])
    head.load_state_dict(state)
    return head


# ---- the loop ------------------------------------------------------------------------------------


def _window_pass(model, head: ValueHead, prefix, last: list[int], new: list[list[int]], temperature: float):
    """The policy and the critic on one window, the prefix as constants.

    ``prefix`` is ``(cache, mask, lengths)``: the keys and values of every row's prompt and earlier tokens but
    its last one, computed without gradient by the same weights that sampled the window (the generator's
    prefill, copied). Fed: that last token and the window's ``n_i`` new tokens, so hidden state ``j`` is the
    state before new token ``j`` (its value ``V(s_j)`` and the logits that score it) and hidden state ``n_i``
    the state after the window (the bootstrap). Returns values ``[B, l + 1]``, the hidden states
    ``[B, l + 1, hidden]`` (detached) and the new tokens' log-probabilities and entropies ``[B, l]``.
    """
    from trl.trainer.utils import entropy_from_logits, selective_log_softmax

    from steerable.lm import cache as kv

    cache, mask, lengths = prefix
    dev = next(model.parameters()).device
    width = max(len(t) for t in new) + 1
    ids = torch.zeros(len(new), width, dtype=torch.long)
    feed_mask = torch.zeros(len(new), width, dtype=torch.long)
    for i, (x, t) in enumerate(zip(last, new, strict=True)):
        ids[i, : len(t) + 1] = torch.tensor([x, *t])
        feed_mask[i, : len(t) + 1] = 1
    past = mask.shape[1]
    base = getattr(model, model.base_model_prefix)
    hidden = base(
        input_ids=ids.to(dev),
        attention_mask=torch.cat([mask, feed_mask], 1).to(dev),
        position_ids=(lengths.unsqueeze(1) + torch.arange(width)).to(dev),
        cache_position=torch.arange(past, past + width, device=dev),
        use_cache=True,
        **{kv.CACHE_KWARG: cache},
    ).last_hidden_state  # [B, l + 1, hidden]
    logits = model.get_output_embeddings()(hidden[:, :-1]).float() / temperature  # as TRL: the sampling distribution
    targets = ids[:, 1:].to(dev)
    return head(hidden), hidden.detach(), selective_log_softmax(logits, targets), entropy_from_logits(logits)


def _trainable_copy(cache):
    """The generator's cache (inference tensors) as ordinary tensors a gradient pass may read."""
    from steerable.lm import cache as kv

    return kv._with_layers(
        cache,
        [(lay.keys.clone(), lay.values.clone()) if kv._initialised(lay) else None for lay in kv._layers(cache)],
    )


def train_tppo(cfg, plan, progress: bool = True) -> dict:
    """A budgeted T-PPO run into ``cfg.out`` (the same outputs as every ``steerable train rl`` run, plus the
    value head); returns the summary."""
    from safetensors.torch import save_file

    from steerable.lm.loading import load_model, resolve_device
    from steerable.lm.local import LocalGenerator
    from steerable.lm.sequences import Sequences
    from steerable.lm.types import SamplingParams
    from steerable.provenance import provenance
    from steerable.rl.algos import POLICY_LOSSES, entropy_bonus
    from steerable.rl.rewards import parse_rewards
    from steerable.rl.rollouts import eval_mode
    from steerable.rl.session import Clock, EvalTimes, builtin_prm, finish, greedy_accuracy, prompts
    from steerable.streams import derive_seed
    from steerable.tasks.answers import make_checker

    rc = plan.rl
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.jsonl", "elapsed.json"):
        if (out / stale).exists():
            print(f"{out}: tppo does not resume; starting over", file=sys.stderr)
            (out / stale).unlink()
    (out / "run.json").write_text(json.dumps(provenance(cfg, "train rl"), indent=2) + "\n")
    torch.manual_seed(cfg.seed)
    extract = make_checker("builtin" if cfg.task.startswith("builtin:") else "boxed").extract
    dev = resolve_device(cfg.device)
    model, tok = load_model(cfg.model, device=str(dev))
    rows, held_in = prompts(cfg, plan.algo, tok)
    funcs, weights = parse_rewards(cfg.reward or plan.algo.reward, extract, builtin_prm)
    gen = LocalGenerator(model, tok, chat_template="never")
    head = ValueHead(model.config.hidden_size).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)  # TRL's defaults
    critic_opt = torch.optim.Adam(head.parameters(), lr=rc.tppo_critic_lr)
    order = list(range(len(rows)))
    random.Random(cfg.seed).shuffle(order)
    drawn = 0

    def fresh() -> Slot:
        nonlocal drawn
        r = rows[order[drawn % len(order)]]
        drawn += 1
        return Slot(gen.encode(r["prompt"]), r["answer"], r["prompt"], [])

    def reward(slots: list[Slot]) -> torch.Tensor:
        texts = [tok.decode(s.response, skip_special_tokens=True) for s in slots]
        prompts, answers = [s.text_prompt for s in slots], [s.answer for s in slots]
        scores = torch.tensor([f(prompts, texts, answer=answers) for f in funcs], dtype=torch.float32)  # [F, N]
        return (torch.tensor(weights).unsqueeze(1) * scores).sum(0)

    clock = Clock(out / "elapsed.json")
    metrics = out / "metrics.jsonl"
    budget = None if cfg.minutes is None else cfg.minutes * 60
    eval_args = (model, tok, held_in, extract, cfg.max_completion)
    times = EvalTimes()

    def held_in_accuracy() -> float:
        return times.timed(lambda: greedy_accuracy(*eval_args))

    with metrics.open("a") as f:
        # as steerable train rl's rows: the start's evaluation is inside `seconds`, not in `eval_seconds`
        f.write(json.dumps({"step": 0, "seconds": 0.0, "held_in_accuracy": greedy_accuracy(*eval_args)}) + "\n")
    slots = [fresh() for _ in range(cfg.prompts_per_step * cfg.group)]
    eos = set(gen.eos_ids)
    step, tokens = 0, 0
    model.train()
    while (cfg.steps is None or step < cfg.steps) and (budget is None or clock.seconds() < budget):
        step += 1
        # 1. a window: at most l new tokens per slot, sampled by the current policy after its whole prefix (run
        # through the current weights once: the prefill serves the sampling and, copied, the update)
        room = [cfg.max_completion - len(s.response) for s in slots]
        context = [s.prompt + s.response for s in slots]
        seqs = Sequences(context, [len(s.prompt) for s in slots], list(range(len(slots))))
        params = SamplingParams(temperature=cfg.temperature, seed=derive_seed(cfg.seed, "tppo-window", step))
        with eval_mode(model):
            gen.prefill(seqs, hold_last=True)
            prefix = (_trainable_copy(seqs.cache), seqs.mask.clone(), seqs.lengths.clone())
            new = gen.step(seqs, params, max_tokens=min(rc.tppo_window, max(room))).token_ids
        new = [list(t)[:k] for t, k in zip(new, room, strict=True)]
        counts = [len(t) for t in new]
        ended = [bool(t) and t[-1] in eos or len(s.response) + n >= cfg.max_completion
                 for s, t, n in zip(slots, new, counts, strict=True)]  # fmt: skip
        tokens += sum(counts)
        for s, t in zip(slots, new, strict=True):
            s.response = s.response + t
        done = [i for i, e in enumerate(ended) if e]
        final = reward([slots[i] for i in done]) if done else torch.zeros(0)
        texts = [tok.decode(slots[i].response, skip_special_tokens=True) for i in done]
        correct = [str(extract(t)) == str(slots[i].answer) for t, i in zip(texts, done, strict=True)]
        # 2. the policy on the window's new tokens only; EGAE from the head, bootstrapped at the cut
        values, hidden, logp, ent = _window_pass(model, head, prefix, [c[-1] for c in context], new, cfg.temperature)
        width = logp.shape[1]
        mask = (torch.arange(width).unsqueeze(0) < torch.tensor(counts).unsqueeze(1)).float()
        with torch.no_grad():
            v = values.detach().cpu()
            boot = v[torch.arange(len(slots)), torch.tensor(counts)]
            r_win = torch.zeros(len(slots), width)
            for j, i in enumerate(done):
                r_win[i, counts[i] - 1] = final[j]
            adv, _ = extended_gae(
                r_win, v[:, :-1] * mask, boot, mask, torch.tensor(ended), rc.tppo_gamma, rc.tppo_lambda
            )
            if rc.tppo_whiten:
                mean = (adv * mask).sum() / mask.sum().clamp(min=1)
                std = (((adv - mean) ** 2 * mask).sum() / mask.sum().clamp(min=1)).sqrt()
                adv = (adv - mean) / (std + 1e-8) * mask
        m = mask.to(logp.device)
        loss, loss_metrics = POLICY_LOSSES[plan.algo.loss](logp, logp.detach(), adv.to(logp.device), m, rc)
        if rc.entropy_coef > 0:
            loss = loss - entropy_bonus(ent, m, rc)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # TRL's max_grad_norm
        opt.step()
        # 3. the critic: only the responses completed in this window, on their Monte-Carlo returns; its inputs are
        # the features each state had when its window was trained
        for i, n in enumerate(counts):
            slots[i].features.append(hidden[i, :n].cpu())
        critic_loss = 0.0
        if done:
            lens = torch.tensor([len(slots[i].response) for i in done])
            cw = int(lens.max())
            feats = torch.stack([torch.nn.functional.pad(torch.cat(slots[i].features), (0, 0, 0, cw - int(n)))
                                 for i, n in zip(done, lens, strict=True)]).to(dev)  # fmt: skip
            target = critic_targets(lens, final, cw, rc.tppo_gamma).to(dev)
            cm = (torch.arange(cw).unsqueeze(0) < lens.unsqueeze(1)).float().to(dev)
            c_loss = 0.5 * (((head(feats) - target) ** 2) * cm).sum() / cm.sum()
            critic_opt.zero_grad(set_to_none=True)
            c_loss.backward()
            critic_opt.step()
            critic_loss = float(c_loss.detach())
        # 4. the ended slots take new prompts: the batch stays full
        slots, refilled = refill(slots, ended, fresh)
        row = {
            "step": step,
            "seconds": round(clock.seconds(), 1),
            "cpu_seconds": times.cpu(),  # this process's CPU time: robust to load
            **times.totals(),
            "loss": float(loss.detach()),
            "critic_loss": critic_loss,
            "entropy": float((ent.detach().cpu() * mask).sum() / mask.sum().clamp(min=1)),
            "tokens": tokens,
            "window_tokens": sum(counts),
            # the filter: the share of each sequence's tokens the policy's gradient pass runs on
            "policy_token_share": sum(counts) / sum(len(c) + n for c, n in zip(context, counts, strict=True)),
            "completed": len(done),
            "refilled": refilled,
            "active_slots": len(slots),
            "value_bootstrap_mean": float(boot.mean()),
            "adv_abs_mean": float((adv.abs() * mask).sum() / mask.sum().clamp(min=1)),
            **{f"loss/{k}": val for k, val in loss_metrics.items()},
        }
        if done:
            row["reward"] = float(final.mean())
            row["accuracy"] = sum(correct) / len(correct)
            row["mean_length"] = row["completions/mean_length"] = float(lens.float().mean())
        if cfg.eval_every and step % cfg.eval_every == 0:
            row["held_in_accuracy"] = held_in_accuracy()
        with metrics.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if progress:
            print(f"tppo step {step} reward {row.get('reward', float('nan')):.3f}", file=sys.stderr)
    clock.save()
    acc = held_in_accuracy()
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    save_file({k: t.contiguous().cpu() for k, t in head.state_dict().items()}, str(out / VALUE_HEAD_FILE))
    summary = finish(cfg, out, step, clock, acc, None)
    summary.update({"tokens": tokens, "eval_seconds": times.totals()["eval_seconds"]})
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
