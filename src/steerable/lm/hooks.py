"""What a forward hook may need to know about the model call it runs in.

A hook on a decoder layer sees hidden states ``[batch, time, hidden]`` but not
which of those positions are padding, prompt or generated tokens. The
generator knows; it publishes each row's prompt length for the duration of
the call, and hooks (activation steering) read it with :func:`prompt_lengths`.
Outside our generator (a raw ``model.generate``), nothing is published and
hooks fall back to what the call itself shows (see ``steer.interventions``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_CALL: ContextVar[tuple[torch.Tensor, torch.Tensor] | None] = ContextVar("steerable_call", default=None)


@contextmanager
def publish_call(prompt_lens: torch.Tensor, prompt_index: torch.Tensor) -> Iterator[None]:
    """Within the block, hooks can read each row's prompt length and which input prompt it came from.

    ``prompt_index`` survives forks and selections: a row copied from another
    carries the same index, so per-prompt state (a controller's decision) follows it.
    """
    token = _CALL.set((prompt_lens, prompt_index))
    try:
        yield
    finally:
        _CALL.reset(token)


def prompt_lengths() -> torch.Tensor | None:
    call = _CALL.get()
    return None if call is None else call[0]


def prompt_indices() -> torch.Tensor | None:
    call = _CALL.get()
    return None if call is None else call[1]
