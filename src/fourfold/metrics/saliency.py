"""Affordance-grounding metrics KLD, SIM and NSS, computed as LOCATE's evaluation code computes them.

Reference: Reagan1311/LOCATE ``utils/evaluation.py`` (``cal_kl``, ``cal_sim``, ``cal_nss``) and ``test.py``
(resize to 224×224 with cv2 ``INTER_LINEAR``, prediction min-max normalised with ``1e-10``). INTRA
(arXiv 2409.06210, §4.1) and Cross-View-AG report the same three numbers on AGD20K.

- :func:`saliency_kld` — KL(GT ‖ pred) of the sum-normalised maps, ``eps = 1e-12`` in three places.
- :func:`saliency_sim` — histogram intersection of the sum-normalised maps.
- :func:`saliency_nss` — mean z-scored prediction over GT pixels whose min-max value exceeds 0.1.
  LOCATE divides by ``np.std`` with no epsilon, which gives NaN for a constant prediction; we return 0.0
  and flag the case (``degenerate=True`` in :func:`saliency_scores`).
- :func:`locate_resize` — bilinear resize (``align_corners=False``, no antialias, which is what cv2
  ``INTER_LINEAR`` does) to 224×224, and :func:`locate_prepare` which also min-max normalises the prediction.

All functions take 2-D arrays ``(H, W)``; values are computed in float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "LOCATE_EVAL_SIZE",
    "SaliencyScores",
    "locate_prepare",
    "locate_resize",
    "saliency_kld",
    "saliency_nss",
    "saliency_scores",
    "saliency_sim",
]

LOCATE_EVAL_SIZE = 224  # LOCATE test.py resizes both maps to 224×224 before scoring
_EPS = 1e-12  # evaluation.py's eps for KLD/SIM/NSS
_MINMAX_EPS = 1e-10  # test.py's eps when min-max normalising the prediction
_NSS_THRESHOLD = 0.1  # evaluation.py binarises the min-max GT at 0.1


def _as_2d(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D map (H, W), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")


def saliency_kld(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, eps: float = _EPS) -> float:
    """KL(GT ‖ pred): ``Σ G·log(G/(P+eps) + eps)`` with ``P = pred/(Σpred+eps)``, ``G = gt/(Σgt+eps)``. Lower is better."""
    p, g = _as_2d(pred, "pred"), _as_2d(gt, "gt")
    _check_pair(p, g)
    p = p / (p.sum() + eps)
    g = g / (g.sum() + eps)
    return float(np.sum(g * np.log(g / (p + eps) + eps)))


def saliency_sim(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, eps: float = _EPS) -> float:
    """Similarity ``Σ min(P, G)`` of the sum-normalised maps, in [0, 1]. Higher is better."""
    p, g = _as_2d(pred, "pred"), _as_2d(gt, "gt")
    _check_pair(p, g)
    p = p / (p.sum() + eps)
    g = g / (g.sum() + eps)
    return float(np.sum(np.minimum(p, g)))


def _nss(pred: np.ndarray, gt: np.ndarray, eps: float) -> tuple[float, bool]:
    std = pred.std()  # population std, as np.std
    if std == 0.0:
        return 0.0, True
    smap = (pred - pred.mean()) / std  # no epsilon here, as in the reference
    fix = (gt - gt.min()) / (gt.max() - gt.min() + eps)
    fix = (fix > _NSS_THRESHOLD).astype(np.float64)
    # The reference adds eps to every pixel before summing the fixation map.
    return float(np.sum(smap * fix) / np.sum(fix + eps)), False


def saliency_nss(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, eps: float = _EPS) -> float:
    """Normalised scanpath saliency: mean z-scored prediction over pixels where min-max GT > 0.1. Higher is better.

    A constant prediction (std 0) returns 0.0 with a warning, where LOCATE's code returns NaN.
    """
    p, g = _as_2d(pred, "pred"), _as_2d(gt, "gt")
    _check_pair(p, g)
    value, degenerate = _nss(p, g, eps)
    if degenerate:
        warnings.warn(
            "saliency_nss: constant prediction (std 0); returning 0.0", RuntimeWarning, stacklevel=2
        )
    return value


def locate_resize(x: np.ndarray | torch.Tensor, size: int = LOCATE_EVAL_SIZE) -> np.ndarray:
    """Bilinear resize of a 2-D map to ``size × size`` (align_corners=False, no antialias = cv2 INTER_LINEAR)."""
    arr = torch.as_tensor(_as_2d(x, "map"), dtype=torch.float64)
    if arr.shape == (size, size):
        return arr.numpy()
    out = F.interpolate(
        arr[None, None], size=(size, size), mode="bilinear", align_corners=False, antialias=False
    )
    return out[0, 0].numpy()


def locate_prepare(
    pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, size: int = LOCATE_EVAL_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Both maps to ``size × size``; prediction then min-max normalised with LOCATE's ``1e-10``.

    ``gt`` is expected in [0, 1] (PNG / 255.0), as LOCATE loads it.
    """
    p = locate_resize(pred, size)
    g = locate_resize(gt, size)
    p = (p - p.min()) / (p.max() - p.min() + _MINMAX_EPS)
    return p, g


@dataclass
class SaliencyScores:
    """Per-image scores and their means; ``groups`` maps a group name (affordance, object...) to its means."""

    kld: list[float] = field(default_factory=list)
    sim: list[float] = field(default_factory=list)
    nss: list[float] = field(default_factory=list)
    n_degenerate: int = 0
    groups: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        """``{"KLD", "SIM", "NSS", "n"}``: plain float64 means over all images (NaN when empty)."""
        n = len(self.kld)
        mean = (lambda v: float(np.mean(np.asarray(v, dtype=np.float64)))) if n else (lambda v: math.nan)
        return {"KLD": mean(self.kld), "SIM": mean(self.sim), "NSS": mean(self.nss), "n": n}

    def as_dict(self) -> dict:
        return {**self.means(), "n_degenerate": self.n_degenerate, "groups": self.groups}


def saliency_scores(
    preds: Sequence[np.ndarray | torch.Tensor],
    gts: Sequence[np.ndarray | torch.Tensor],
    *,
    groups: dict[str, Sequence[str]] | None = None,
    size: int = LOCATE_EVAL_SIZE,
) -> SaliencyScores:
    """Score a test set as LOCATE does: :func:`locate_prepare` each pair, then KLD/SIM/NSS per image.

    Args:
        preds: predicted maps, any size and range (each ``(H, W)``).
        gts: ground-truth maps in [0, 1] (each ``(H', W')``).
        groups: optional ``{"affordance": [label per image], "object": [...]}``; each gives per-value means.
        size: evaluation size (224 in LOCATE).
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground-truth maps")
    for name, labels in (groups or {}).items():
        if len(labels) != len(preds):
            raise ValueError(f"groups[{name!r}] has {len(labels)} labels for {len(preds)} images")
    scores = SaliencyScores()
    for pred, gt in zip(preds, gts, strict=True):
        p, g = locate_prepare(pred, gt, size)
        scores.kld.append(saliency_kld(p, g))
        scores.sim.append(saliency_sim(p, g))
        value, degenerate = _nss(p, g, _EPS)
        scores.nss.append(value)
        scores.n_degenerate += int(degenerate)
    if scores.n_degenerate:
        warnings.warn(
            f"saliency_scores: {scores.n_degenerate} constant prediction(s) scored NSS 0.0",
            RuntimeWarning,
            stacklevel=2,
        )
    for name, labels in (groups or {}).items():
        table: dict[str, dict[str, float]] = {}
        for value in sorted(set(labels)):
            idx = [i for i, lab in enumerate(labels) if lab == value]
            table[value] = {
                "KLD": float(np.mean([scores.kld[i] for i in idx])),
                "SIM": float(np.mean([scores.sim[i] for i in idx])),
                "NSS": float(np.mean([scores.nss[i] for i in idx])),
                "n": len(idx),
            }
        scores.groups[name] = table
    return scores
