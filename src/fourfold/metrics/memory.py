"""Training-state memory by category: frozen weights, trainable tensors, gradients, optimizer state, buffers.

Counts each storage once (aliases such as a parametrization returning the base storage are not double
counted). Used by the SaRA benchmark and tests ("SaRA ≤ 4N + 24K + largest tensor" vs 16N for full FT).
"""

from __future__ import annotations

import resource
import sys

import torch
from torch import nn

__all__ = ["peak_rss_bytes", "state_bytes"]


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes held by ``model`` (+ ``optimizer``) per category; ``total`` sums them.

    Categories: ``frozen`` (parameters without grad), ``trainable`` (parameters with grad), ``grads``,
    ``optimizer`` (every tensor in the optimizer state), ``buffers`` (model buffers: masks, indices, P0
    copies...).
    """
    seen: set[tuple[int, int]] = set()
    out = {"frozen": 0, "trainable": 0, "grads": 0, "optimizer": 0, "buffers": 0}

    def add(cat: str, t: torch.Tensor | None) -> None:
        if t is None or t.numel() == 0:
            return
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen:
            return
        seen.add(key)
        out[cat] += _nbytes(t)

    for p in model.parameters():
        add("trainable" if p.requires_grad else "frozen", p)
        add("grads", p.grad)
    for b in model.buffers():
        add("buffers", b)
    if optimizer is not None:
        for state in optimizer.state.values():
            for v in state.values():
                if isinstance(v, torch.Tensor):
                    add("optimizer", v)
    out["total"] = sum(out.values())
    return out


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss``; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
