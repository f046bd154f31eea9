"""Fréchet distance between feature sets, computed as torch-fidelity computes FID.

torch-fidelity (https://github.com/toshas/torch-fidelity, ``metric_fid.py``): μ = mean over samples,
Σ = ``np.cov(rowvar=False)``; FD = ‖μ1 − μ2‖² + Tr Σ1 + Tr Σ2 − 2 Tr sqrtm(Σ1 Σ2) with
``scipy.linalg.sqrtm``; if the root is not finite, 1e-6·I is added to both Σ; an imaginary diagonal
above 1e-3 is an error, otherwise the real part is used. Feeding 2048-d InceptionV3 pool features gives
FID; the SaRA demo feeds its DigitNet features (FD_fit).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = ["feature_statistics", "frechet_distance", "frechet_distance_from_features"]

SQRTM_EPS = 1e-6  # torch-fidelity's diagonal offset when sqrtm is not finite
IMAG_ATOL = 1e-3  # torch-fidelity's tolerance on the imaginary diagonal of sqrtm


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """features: (samples, dim), samples ≥ 2 → (μ (dim,), Σ (dim, dim)) in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"feature_statistics: need (samples ≥ 2, dim) features, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrtm(m: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm`` (torch-fidelity passes ``disp=False``, deprecated in SciPy ≥ 1.16; same result)."""
    with np.errstate(all="ignore"):
        out = scipy.linalg.sqrtm(m)
    return out[0] if isinstance(out, tuple) else np.asarray(out)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """FD between two Gaussians given by their means (dim,) and covariances (dim, dim)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"frechet_distance: shapes differ: μ {mu1.shape}/{mu2.shape}, Σ {sigma1.shape}/{sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * SQRTM_EPS
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAG_ATOL):
            raise ValueError(
                f"frechet_distance: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm"
            )
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance_from_features(features1, features2) -> float:
    """FD between two feature sets (samples, dim) each."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))
