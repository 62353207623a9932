"""Torch's intra-op thread count, set for a piece of work and restored after it: a library call (export,
verify-onnx) must not leave the caller's process on another thread count than it found."""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block at ``threads`` (None: unchanged), then restore the count found before."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
