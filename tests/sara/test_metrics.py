"""Acceptance test 9 (spec §8) and the metric functions SaRA reports."""

import math

import numpy as np
import pytest
import torch
from tests.sara.conftest import make_stack

from fourfold import sara
from fourfold.metrics import frechet_distance, frechet_distance_from_features, state_bytes, vlhi

# Tab. 1 of arXiv 2409.06633, SD1.5, "Mean" column: (FID, CLIP, VLHI)
SD15_MEAN = {
    "LoRA 50M": (150.74, 27.96, 1.45),
    "LoRA 20M": (148.77, 27.97, 1.52),
    "LoRA 5M": (151.58, 28.00, 1.44),
    "AdaptFormer 50M": (146.62, 27.06, 1.18),
    "AdaptFormer 20M": (150.24, 27.39, 1.21),
    "AdaptFormer 5M": (156.88, 27.67, 1.13),
    "LT-SFT 50M": (150.18, 25.76, 0.49),
    "LT-SFT 20M": (155.48, 25.99, 0.42),
    "LT-SFT 5M": (165.72, 26.37, 0.27),
    "SaRA 50M": (134.96, 27.08, 1.55),
    "SaRA 20M": (136.92, 27.53, 1.69),
    "SaRA 5M": (147.80, 27.73, 1.44),
    "full FT": (133.69, 26.42, 1.30),
}


def test_learning_rate_rule_eq12():
    assert sara.SaraConfig(threshold=2e-3).learning_rate() == pytest.approx(1e-3 * math.exp(-0.7), rel=1e-12)
    assert round(sara.learning_rate_for_threshold(2e-4), 6) == 9.32e-4
    assert round(sara.learning_rate_for_threshold(8e-4), 6) == 7.56e-4
    assert sara.SaraConfig(threshold=2e-3, lr=1e-4).learning_rate() == 1e-4
    with pytest.raises(ValueError, match="fraction"):
        sara.SaraConfig(fraction=0.1).learning_rate()


def test_vlhi_reproduces_the_13_sd15_mean_values():
    rows = list(SD15_MEAN.values())
    got = vlhi([r[0] for r in rows], [r[1] for r in rows])
    for (name, (_, _, paper)), value in zip(SD15_MEAN.items(), got, strict=True):
        assert abs(value - paper) <= 0.011, (name, value, paper)


def test_vlhi_edge_cases():
    assert vlhi([1.0, 2.0], [0.0, 1.0]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="at least 2"):
        vlhi([1.0], [1.0])
    with pytest.warns(UserWarning, match="CLIP"):
        assert vlhi([1.0, 3.0], [5.0, 5.0]) == [1.0, 0.0]


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    assert abs(frechet_distance_from_features(x, x)) < 1e-6
    # same covariance, shifted mean: FD = ‖Δμ‖²
    assert frechet_distance(np.zeros(3), np.eye(3), np.ones(3), np.eye(3)) == pytest.approx(3.0, abs=1e-9)
    # 1-D Gaussians: (μ1−μ2)² + (σ1−σ2)²
    assert frechet_distance([0.0], [[4.0]], [1.0], [[1.0]]) == pytest.approx(1.0 + 1.0, abs=1e-9)
    # singular covariances take torch-fidelity's 1e-6·I path and stay finite
    a = np.zeros((5, 4))
    a[:, 0] = np.arange(5)
    assert math.isfinite(frechet_distance_from_features(a, a + 1.0))


def test_state_bytes_sara_bound_vs_full_ft():
    model = make_stack()
    n = sum(p.numel() for p in model.parameters())
    largest = max(p.numel() for p in model.parameters()) * 4
    h = sara.wrap(model, sara.SaraConfig(fraction=0.1, progressive_at=None))
    k = h.num_support()
    opt = torch.optim.AdamW(h.parameters(), lr=1e-3)
    model(torch.zeros(4, dtype=torch.long)).sum().backward()
    opt.step()
    sb = state_bytes(model, opt)
    assert sb["total"] <= 4 * n + 24 * k + largest
    full = make_stack()
    opt_full = torch.optim.AdamW(full.parameters(), lr=1e-3)
    full(torch.zeros(4, dtype=torch.long)).sum().backward()
    opt_full.step()
    n_tensors = len(list(full.parameters()))  # + one fp32 "step" scalar per tensor in torch AdamW
    assert state_bytes(full, opt_full)["total"] == 16 * n + 4 * n_tensors
