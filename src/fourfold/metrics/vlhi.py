"""VLHI, SaRA's Visual-Linguistic Harmony Index (arXiv 2409.06633, §5.1, Eq. 8).

For row i of a comparison group (the paper: all 13 rows of one model and one dataset column),

    VLHI_i = (max FID − FID_i) / (max FID − min FID) + (CLIP_i − min CLIP) / (max CLIP − min CLIP)  ∈ [0, 2].

The paper's "Mean" column is computed from the mean FID/CLIP of each row, not by averaging VLHIs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["vlhi", "vlhi_scores"]


def vlhi(fids: Sequence[float], clip_scores: Sequence[float]) -> list[float]:
    """VLHI of every row of one group; FID lower is better, CLIP score higher is better.

    fids, clip_scores: (rows,) with rows ≥ 2 → list of rows floats. A zero range makes that term 0
    (with a warning) instead of dividing by zero.
    """
    f = np.asarray(fids, dtype=np.float64)
    c = np.asarray(clip_scores, dtype=np.float64)
    if f.ndim != 1 or c.shape != f.shape:
        raise ValueError(
            f"vlhi: fids and clip_scores must be 1-D of equal length, got {f.shape} and {c.shape}"
        )
    if f.size < 2:
        raise ValueError("vlhi: a comparison group needs at least 2 rows")
    if not (np.isfinite(f).all() and np.isfinite(c).all()):
        raise ValueError("vlhi: fids and clip_scores must be finite")
    terms = []
    for name, x, better_low in (("FID", f, True), ("CLIP", c, False)):
        span = x.max() - x.min()
        if span == 0:
            warnings.warn(f"vlhi: all {name} values are equal; that term is 0 for every row", stacklevel=2)
            terms.append(np.zeros_like(x))
        else:
            terms.append((x.max() - x) / span if better_low else (x - x.min()) / span)
    return [float(v) for v in terms[0] + terms[1]]


vlhi_scores = vlhi  # the name the SaRA CLI and demo import
