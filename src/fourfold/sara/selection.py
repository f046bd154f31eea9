"""Global threshold selection (§4.1, Eq. 2): which entries of which tensors SaRA trains.

The support of a tensor is stored as sorted flat indices (int32, or int64 for tensors with ≥ 2^31
entries), never as a bool mask.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

INT32_LIMIT = 2**31
HIST_BINS = 1 << 16  # first-pass bins of the fraction → θ resolution


def index_dtype(numel: int) -> torch.dtype:
    return torch.int32 if numel < INT32_LIMIT else torch.int64


def select_indices(weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """Sorted flat indices of ``|w| < θ`` (strict), computed in fp32.

    weight: any shape and float dtype → (K,) int32/int64.
    """
    flat = weight.detach().reshape(-1).float().abs()
    idx = torch.nonzero(flat < threshold, as_tuple=False).reshape(-1)  # nonzero is sorted
    return idx.to(index_dtype(flat.numel()))


def resolve_fraction(tensors: Iterable[torch.Tensor], fraction: float) -> float:
    """Smallest θ (an fp32 value) with ``count(|w| < θ) ≥ ⌈fraction · N⌉`` over all tensors together.

    Two passes, no global sort: a histogram on [0, max|w|] finds the bin holding the k-th smallest |w|,
    then only the values inside that bin are gathered and sorted. θ is the next fp32 above that k-th
    value, so ties at it are all selected ("hits ⌈f·N⌉ up to ties").
    """
    tensors = [t.detach() for t in tensors if t.numel() > 0]
    if not tensors:
        raise ValueError("resolve_fraction: no parameters to select from")
    n_total = sum(t.numel() for t in tensors)
    k = max(1, math.ceil(fraction * n_total))
    vmax = max(float(t.float().abs().max()) for t in tensors)
    if vmax == 0.0:
        return float(torch.nextafter(torch.tensor(0.0), torch.tensor(1.0)))
    top = float(torch.nextafter(torch.tensor(vmax, dtype=torch.float32), torch.tensor(math.inf)))
    edges = torch.linspace(0.0, top, HIST_BINS + 1, dtype=torch.float32)
    edges[-1] = top  # linspace may round; the last edge must exceed every |w|
    counts = torch.zeros(HIST_BINS + 2, dtype=torch.int64)
    for t in tensors:
        # right=True: bucket i holds edges[i-1] <= x < edges[i]
        b = torch.bucketize(t.reshape(-1).float().abs(), edges, right=True)
        counts += torch.bincount(b, minlength=HIST_BINS + 2)
    cum = torch.cumsum(counts, 0)
    b = int(torch.searchsorted(cum, torch.tensor(k), right=False))  # first bucket with cum ≥ k
    below = int(cum[b - 1]) if b > 0 else 0
    lo = float(edges[b - 1]) if b > 0 else -math.inf
    hi = float(edges[b]) if b < len(edges) else math.inf
    inside = []
    for t in tensors:
        a = t.reshape(-1).float().abs()
        inside.append(a[(a >= lo) & (a < hi)])
    vals = torch.sort(torch.cat(inside)).values
    kth = vals[k - below - 1]
    return float(torch.nextafter(kth, torch.tensor(math.inf, dtype=torch.float32)))
