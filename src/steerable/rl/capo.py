"""CAPO: curvature-aware policy optimisation (Melo, Abate & Gal, "Stabilizing Policy Gradients for
Sample-Efficient Reinforcement Learning in LLM Reasoning", arXiv 2510.00819, ICLR 2026; official code
``luckeciano/stable-pg-llm``, ``GRPOEntropyTrainer`` with ``capo_only``).

A second-order model of the update restricted to the LM head predicts, for every token, what the update
that token alone asks for would do to the policy (a KL shift) and to the objective; tokens whose update
would leave the trust region or move the objective the wrong way (or too far) are masked out of GRPO's loss.

The model. The head maps the last hidden state ``h`` [H] to logits ``z = W h (+ b)``, ``W`` [V, H]; at a
token with sampled action ``a``, advantage ``A``, probabilities ``π = softmax(z)`` and ``v = e_a − π``:

    g   = A v hᵀ                      the gradient of the surrogate A·π(a)/π_old(a) in W at π = π_old
    d   = the optimiser's direction for g alone:  SGD  d = g;
          Adam d = m̂ / (√v̂ + ε),  m̂ = (β1 m + (1 − β1) g) / (1 − β1^{k+1}),  v̂ = (β2 v + (1 − β2) g²) / (1 − β2^{k+1})
          with (m, v, k) the running moments of the batch-mean head gradient (d = g before the first update)
    u   = d h                         [V] the logit change per unit of learning rate; Δz = η u
    ΔJ  = η ⟨g, d⟩ + ½ η² A ((vᵀu)² − uᵀ F u),    F = diag(π) − π πᵀ  (the softmax Fisher)
    KL  = ½ η² (vᵀu)²   (``capo_kl="sampled"``: the official code's one-action Fisher, E_a[v vᵀ] = F)
       or ½ η² uᵀ F u   (``capo_kl="exact"``: KL(π_old ‖ π_new) to second order)

``A((vᵀu)² − uᵀFu)`` is ``uᵀ ∇²_z (A π(a)/π_old(a)) u``: the surrogate's curvature along the step. A token
is kept when ``KL < capo_kl_max`` and ``−τ < ΔJ < τ`` (``τ = capo_objective_max``; the paper's runs clip
symmetrically) or, with ``capo_symmetric=False`` (the code's default), ``0 ≤ ΔJ < τ``. The paper's GRPO
settings: ``τ_KL = 1e-4``, ``τ = 0.01``, symmetric, Adam.

Where this differs from the official code (docs/differences.md): the softmax runs over the whole vocabulary
(the code renormalises over the top-k logits to fit a 150k vocabulary) and the Adam moments are dense
[V, H] tensors (the code keeps them per token id for the top-k rows); the head's input is captured by a
hook on the output embeddings in an extra forward pass without gradients (the code asks the model for its
hidden states). Sentence- and batch-level masks of the code (off in its CAPO runs) are not built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steerable.rl.core import Metrics, RLConfig, masked_mean, register_loss
from steerable.rl.losses import grpo_loss

__all__ = ["CapoCurvature", "CapoShifts", "capo_loss", "capo_mask", "head_inputs", "token_shifts"]


@dataclass(frozen=True)
class CapoShifts:
    """Per-token predictions of the second-order model, ``[B, T]`` each."""

    objective: torch.Tensor  # ΔJ: the change of the token's surrogate under its own update
    kl: torch.Tensor  # the KL shift of the policy at the token's position under that update


@dataclass
class AdamMoments:
    """Adam's running moments of the LM head's (ascent) gradient, as the optimiser would keep them."""

    m: torch.Tensor  # [V, H]
    v: torch.Tensor  # [V, H]
    k: int = 0  # updates so far
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """Adam's step direction ``[n, V, H]`` for each gradient ``g`` [n, V, H] on top of the moments
        (read-only); the raw gradient before the first update, as the official code."""
        if self.k == 0:
            return g
        m = self.beta1 * self.m + (1 - self.beta1) * g
        v = self.beta2 * self.v + (1 - self.beta2) * g * g
        m_hat = m / (1 - self.beta1 ** (self.k + 1))
        v_hat = v / (1 - self.beta2 ** (self.k + 1))
        return m_hat / (v_hat.sqrt() + self.eps)

    def update(self, g: torch.Tensor) -> None:
        """One step of the moments with the batch gradient ``g`` [V, H]."""
        self.m.mul_(self.beta1).add_(g, alpha=1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        self.k += 1


def token_shifts(
    h: torch.Tensor,
    logits: torch.Tensor,
    actions: torch.Tensor,
    advantages: torch.Tensor,
    lr: float,
    moments: AdamMoments | None = None,
    kl: str = "sampled",
) -> CapoShifts:
    """The second-order model of the module docstring for tokens ``[N]``: ``h`` [N, H] the head's inputs,
    ``logits`` [N, V], ``actions`` [N] the sampled ids, ``advantages`` [N], ``lr`` the step size η; SGD's
    direction without ``moments``, Adam's with them. Returns ``CapoShifts`` of shape [N]."""
    dt = torch.promote_types(h.dtype, torch.float32)  # bf16 heads are predicted in float32
    h, logits, adv = h.to(dt), logits.to(dt), advantages.to(dt)
    pi = torch.softmax(logits, -1)  # [N, V]
    v = -pi
    v[torch.arange(len(actions)), actions] += 1.0  # e_a − π
    if moments is None:  # d = g = A v hᵀ: u = A |h|² v and ⟨g, d⟩ = A² |v|² |h|², without the [V, H] tensors
        hh = (h * h).sum(-1)
        u = (adv * hh).unsqueeze(-1) * v
        first = adv**2 * (v * v).sum(-1) * hh
    else:
        n, vocab, hidden = len(h), pi.shape[1], h.shape[1]
        chunk = max(1, 2**22 // (vocab * hidden))  # [chunk, V, H] at a time: about 16 MB
        u = torch.empty_like(pi)
        first = torch.empty(n, dtype=pi.dtype, device=pi.device)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            g = adv[s:e, None, None] * v[s:e, :, None] * h[s:e, None, :]  # [n, V, H]
            d = moments.direction(g)
            u[s:e] = torch.einsum("nvh,nh->nv", d, h[s:e])
            first[s:e] = (g * d).sum((1, 2))
    vu = (v * u).sum(-1)  # vᵀu
    ufu = (pi * u * u).sum(-1) - (pi * u).sum(-1) ** 2  # uᵀ (diag π − π πᵀ) u
    objective = lr * first + 0.5 * lr**2 * adv * (vu**2 - ufu)
    kl_shift = 0.5 * lr**2 * (vu**2 if kl == "sampled" else ufu)
    return CapoShifts(objective, kl_shift)


def capo_mask(shifts: CapoShifts, mask: torch.Tensor, cfg: RLConfig) -> tuple[torch.Tensor, Metrics]:
    """The tokens CAPO keeps (``[B, T]`` bool, False off ``mask``) and the shares of ``mask``'s tokens
    rejected, by reason: the trust region (``KL ≥ capo_kl_max``), the objective going down (``ΔJ ≤ −τ``;
    ``ΔJ < 0`` without ``capo_symmetric``) and the objective moving too far up (``ΔJ ≥ τ``). A token can be
    rejected for two reasons; ``capo/masked_frac`` counts it once."""
    real = mask > 0
    trust = shifts.kl >= cfg.capo_kl_max
    low = shifts.objective <= -cfg.capo_objective_max if cfg.capo_symmetric else shifts.objective < 0
    high = shifts.objective >= cfg.capo_objective_max
    keep = real & ~(trust | low | high)
    m = real.float()
    return keep, {
        "capo/masked_frac": float(masked_mean((real & ~keep).float(), m)),
        "capo/masked_trust_region_frac": float(masked_mean((trust & real).float(), m)),
        "capo/masked_objective_decrease_frac": float(masked_mean((low & real).float(), m)),
        "capo/masked_objective_increase_frac": float(masked_mean((high & real).float(), m)),
        "capo/kl_mean": float(masked_mean(shifts.kl, m)),
        "capo/objective_mean": float(masked_mean(shifts.objective, m)),
    }


@register_loss("capo")
def capo_loss(logp, old_logp, advantages, mask, cfg: RLConfig = RLConfig(), *, capo_shifts: CapoShifts):
    """CAPO's loss: GRPO's (``−min(r A, clip(r, 1 ± ε) A)``, mean over each sequence's kept tokens, then
    over sequences) on the tokens :func:`capo_mask` keeps, as the official code masks GRPO's loss. With no
    token rejected it is GRPO's loss exactly."""
    keep, stats = capo_mask(capo_shifts, mask, cfg)
    loss, metrics = grpo_loss(logp, old_logp, advantages, mask * keep.to(mask.dtype), cfg)
    return loss, {**metrics, **stats}


class CapoCurvature:
    """What CAPO keeps between steps: the optimiser's view of the LM head (Adam's moments of its batch-mean
    gradient, updated with the kept tokens after each masking, as the official code's ``capo_only`` mode).
    ``direction="sgd"`` keeps nothing."""

    def __init__(self, direction: str = "adam", beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.direction, self.betas, self.eps = direction, (beta1, beta2), eps
        self.moments: AdamMoments | None = None

    def shifts(
        self,
        h: torch.Tensor,
        logits: torch.Tensor,
        actions: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        lr: float,
        cfg: RLConfig,
    ) -> CapoShifts:
        """``CapoShifts`` [B, T] for a batch (``h`` [B, T, H], ``logits`` [B, T, V], ``actions``,
        ``advantages`` and ``mask`` [B, T]); then the moments take one step with the mean gradient of the
        tokens :func:`capo_mask` keeps."""
        b, t, hidden = h.shape
        vocab = logits.shape[-1]
        real = (mask > 0).reshape(-1)
        hf, zf = h.reshape(-1, hidden)[real].float(), logits.reshape(-1, vocab)[real].float()
        af, advf = actions.reshape(-1)[real], advantages.reshape(-1)[real].float()
        if self.direction == "adam" and self.moments is None:
            zeros = torch.zeros(vocab, hidden, device=h.device)
            self.moments = AdamMoments(zeros, zeros.clone(), 0, *self.betas, self.eps)
        part = token_shifts(hf, zf, af, advf, lr, self.moments, cfg.capo_kl)
        objective = torch.zeros(b * t, device=h.device)
        kl = torch.zeros(b * t, device=h.device)
        objective[real], kl[real] = part.objective, part.kl
        out = CapoShifts(objective.view(b, t), kl.view(b, t))
        if self.moments is not None:
            keep = capo_mask(out, mask, cfg)[0].reshape(-1)[real]
            pi = torch.softmax(zf[keep], -1)
            v = -pi
            v[torch.arange(len(pi)), af[keep]] += 1.0
            n = max(1, int(keep.sum()))
            self.moments.update(torch.einsum("n,nv,nh->vh", advf[keep], v, hf[keep]) / n)  # mean of A v hᵀ
        return out


@torch.no_grad()
def head_inputs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int):
    """The LM head's input and output at the last ``width`` positions' predictions: ``h`` [B, width, H] and
    ``logits`` [B, width, V] (position ``j`` predicts completion token ``j``). One forward pass without
    gradients, the head's input caught by a hook."""
    head = model.get_output_embeddings()
    caught: dict = {}

    def hook(module, args, output):
        caught["h"], caught["z"] = args[0], output

    handle = head.register_forward_hook(hook)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        handle.remove()
    h, z = caught["h"], caught["z"]
    return h[:, -width - 1 : -1], z[:, -width - 1 : -1]
