"""Run PyTorch single-threaded while exporting many models."""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """PyTorch with one intra-op thread inside the block, restored afterwards. On a machine whose cores are busy,
    the default thread pool made each forward pass of an export ~40x slower (4.5 s instead of 0.1 s for a
    224 px net); exports and their checks are small enough that one thread is never the bottleneck."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
