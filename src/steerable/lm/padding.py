"""Batches of prompts for one forward pass, left-padded, with position ids that skip the padding."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def left_padded(tokenizer, prompts: Sequence[str] | Sequence[Sequence[int]], device) -> dict[str, torch.Tensor]:
    """Prompts (texts, or token id rows) as one left-padded batch with position ids counted from each row's start.

    Left padding puts every prompt's last tokens in the last columns; explicit
    position ids keep absolute-position models (GPT-2) from seeing the padding.
    """
    rows = [list(p) for p in prompts] if prompts and not isinstance(prompts[0], str) else None
    if rows is None:
        rows = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    pad = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    width = max(map(len, rows))
    ids = [[pad] * (width - len(r)) + r for r in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    pos = [[0] * (width - len(r)) + list(range(len(r))) for r in rows]
    return {
        "input_ids": torch.tensor(ids, device=device),
        "attention_mask": torch.tensor(mask, device=device),
        "position_ids": torch.tensor(pos, device=device),
    }


def right_padded(rows: Sequence[Sequence[int]], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one right-padded batch (pad id 0) and its attention mask: a causal model reads every real
    position as it would alone, for teacher-forced scoring."""
    ids = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), device=device)
        mask[i, : len(r)] = 1
    return ids, mask
