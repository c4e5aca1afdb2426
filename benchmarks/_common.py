"""What every benchmark does first: a deliberate thread count and quiet transformers."""

from __future__ import annotations

import os

import torch


def setup() -> None:
    # on two shared cores the wrong thread count is 6-10x slower: take OMP_NUM_THREADS, else every core
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
