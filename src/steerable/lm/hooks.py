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

_PROMPT_LENS: ContextVar[torch.Tensor | None] = ContextVar("steerable_prompt_lens", default=None)


@contextmanager
def publish_prompt_lengths(lengths: torch.Tensor) -> Iterator[None]:
    """Within the block, :func:`prompt_lengths` returns ``lengths`` (``[batch]``, tokens of each row's prompt)."""
    token = _PROMPT_LENS.set(lengths)
    try:
        yield
    finally:
        _PROMPT_LENS.reset(token)


def prompt_lengths() -> torch.Tensor | None:
    return _PROMPT_LENS.get()
