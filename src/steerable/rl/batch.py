"""Row operations on TRL's generated batch (the dict ``_generate_and_score_completions`` returns): select rows,
join batches of different widths, append rows. Dynamic sampling and BRPO's answer rows change which rows a
batch holds; every per-row entry must follow, so an entry this module does not know is an error, not a row
silently left behind.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from steerable.errors import ConfigError

LEFT = ("prompt_ids", "prompt_mask")  # left-padded, [B, P]
RIGHT = (  # right-padded to the completion width, [B, T]
    "completion_ids",
    "completion_mask",
    "advantages",
    "old_per_token_logps",
    "ref_per_token_logps",
    "sampling_per_token_logps",
    "tool_mask",
    "round_ids",  # EAPO: each completion token's round (−1: none)
)
SCALAR = ("num_items_in_batch",)


def _pad(x: torch.Tensor, width: int, left: bool, value: float) -> torch.Tensor:
    if x.dim() < 2 or x.shape[1] == width:
        return x
    pad = torch.full((x.shape[0], width - x.shape[1], *x.shape[2:]), value, dtype=x.dtype, device=x.device)
    return torch.cat([pad, x] if left else [x, pad], dim=1)


def _fill(key: str, pad_id: int) -> float:
    if key in ("prompt_ids", "completion_ids"):
        return pad_id
    return {"tool_mask": 1, "round_ids": -1}.get(key, 0)


def _check_keys(batch: dict) -> None:
    for k, v in batch.items():
        known = k in LEFT or k in RIGHT or k in SCALAR
        if not known and isinstance(v, torch.Tensor) and v.dim() > 1:
            raise ConfigError(f"the generated batch has an entry {k!r} of unknown layout: rows cannot be moved")


def select(batch: dict, rows: Sequence[int] | torch.Tensor) -> dict:
    """The batch restricted to ``rows`` (in that order); per-row entries follow, scalars stay."""
    _check_keys(batch)
    idx = torch.as_tensor(rows, dtype=torch.long)
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() >= 1:
            out[k] = v[idx.to(v.device)]
        elif isinstance(v, list):
            out[k] = [v[int(i)] for i in idx]
        else:
            out[k] = v
    return _recount(out)


def concat(batches: Sequence[dict], pad_id: int) -> dict:
    """Rows of several batches in one, padded to the widest (prompts on the left, completions on the right)."""
    for b in batches:
        _check_keys(b)
    keys = list(batches[0])
    if any(set(b) != set(keys) for b in batches):
        raise ConfigError("batches to join carry different entries")
    out = {}
    for k in keys:
        vals = [b[k] for b in batches]
        if isinstance(vals[0], torch.Tensor) and vals[0].dim() >= 1:
            width = max(v.shape[1] for v in vals) if vals[0].dim() > 1 else 0
            out[k] = torch.cat([_pad(v, width, k in LEFT, _fill(k, pad_id)) for v in vals], dim=0)
        elif isinstance(vals[0], list):
            out[k] = [x for v in vals for x in v]
        else:
            out[k] = vals[0]
    return _recount(out)


def token_level(advantages: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` or ``[B, T']`` advantages as ``[B, T]`` (the completion width), zero past the end."""
    width = completion_mask.shape[1]
    if advantages.dim() == 1:
        return advantages.float().unsqueeze(1).expand(-1, width).clone()
    adv = advantages.float()[:, :width]
    return _pad(adv, width, left=False, value=0.0)


def _recount(batch: dict) -> dict:
    """``num_items_in_batch``: the tokens the loss sees, after rows moved."""
    if "num_items_in_batch" in batch and "completion_mask" in batch:
        mask = batch["completion_mask"]
        if "tool_mask" in batch:
            mask = mask * batch["tool_mask"]
        batch["num_items_in_batch"] = mask.sum()
    return batch
