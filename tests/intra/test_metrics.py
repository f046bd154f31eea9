"""KLD/SIM/NSS against values worked out by hand from LOCATE's formulas."""

import math

import numpy as np
import pytest
import torch

from fourfold.metrics import (
    locate_prepare,
    locate_resize,
    saliency_kld,
    saliency_nss,
    saliency_scores,
    saliency_sim,
)

PRED = np.array([[1.0, 3.0], [0.0, 0.0]])
GT = np.array([[1.0, 1.0], [0.0, 0.0]])


def test_kld_hand_value():
    # P = (.25, .75, 0, 0), G = (.5, .5, 0, 0): KL = .5 ln(.5/.25) + .5 ln(.5/.75) = .5 ln(4/3)
    assert saliency_kld(PRED, GT) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-9)


def test_kld_eps_terms_on_disjoint_support():
    # GT mass where the prediction is 0: each term is g·log(g/eps + eps), the reference's finite penalty.
    pred = np.array([[1.0, 0.0]])
    gt = np.array([[0.0, 1.0]])
    assert saliency_kld(pred, gt) == pytest.approx(math.log(1 / 1e-12 + 1e-12), rel=1e-9)


def test_sim_hand_value():
    assert saliency_sim(PRED, GT) == pytest.approx(0.75, abs=1e-12)
    assert saliency_sim(GT, GT) == pytest.approx(1.0, abs=1e-9)


def test_nss_hand_value():
    # mean 1, population std sqrt(1.5); z = (0, 2, -1, -1)/sqrt(1.5); fixations at the first two pixels
    assert saliency_nss(PRED, GT) == pytest.approx((2 / math.sqrt(1.5)) / 2, rel=1e-9)


def test_nss_threshold_and_scale_invariance():
    gt = np.array([[1.0, 0.05], [0.2, 0.0]])  # min-max: 1, .05, .2, 0 -> fixations at 1 and .2
    pred = np.array([[4.0, 2.0], [0.0, 2.0]])
    z = (pred - pred.mean()) / pred.std()
    expect = (z[0, 0] + z[1, 0]) / 2
    assert saliency_nss(pred, gt) == pytest.approx(expect, rel=1e-9)
    assert saliency_nss(pred * 255.0, gt * 255.0) == pytest.approx(expect, rel=1e-9)  # the reference's /255


def test_nss_constant_prediction_is_zero_and_flagged():
    with pytest.warns(RuntimeWarning, match="constant"):
        assert saliency_nss(np.ones((2, 2)), GT) == 0.0
    with pytest.warns(RuntimeWarning):
        scores = saliency_scores([np.zeros((4, 4)), PRED], [np.eye(4), GT])
    assert scores.n_degenerate == 1
    assert all(math.isfinite(v) for v in scores.nss)


def test_resize_is_bilinear_half_pixel():
    # align_corners=False upsampling of a 2-pixel ramp: 0, .25, .75, 1
    out = locate_resize(np.array([[0.0, 1.0], [0.0, 1.0]]), size=4)
    np.testing.assert_allclose(out[0], [0.0, 0.25, 0.75, 1.0], atol=1e-12)


def test_prepare_minmax_and_shapes():
    p, g = locate_prepare(torch.tensor([[2.0, 4.0], [6.0, 10.0]]), GT)
    assert p.shape == g.shape == (224, 224)
    assert p.min() == pytest.approx(0.0) and p.max() == pytest.approx(1.0, abs=1e-9)


def test_scores_means_and_groups():
    rng = np.random.default_rng(0)
    preds = [rng.random((8, 8)) for _ in range(4)]
    gts = [rng.random((16, 16)) for _ in range(4)]
    s = saliency_scores(preds, gts, groups={"affordance": ["a", "b", "a", "b"]})
    m = s.means()
    for k, attr in (("KLD", "kld"), ("SIM", "sim"), ("NSS", "nss")):
        manual = [
            {"kld": saliency_kld, "sim": saliency_sim, "nss": saliency_nss}[attr](*locate_prepare(p, g))
            for p, g in zip(preds, gts, strict=True)
        ]
        assert m[k] == pytest.approx(np.mean(manual), rel=1e-12)
    assert s.groups["affordance"]["a"]["KLD"] == pytest.approx((s.kld[0] + s.kld[2]) / 2)


def test_perfect_prediction():
    g = np.zeros((10, 10))
    g[2:5, 3:7] = 1.0
    s = saliency_scores([g], [g]).means()
    assert s["KLD"] < 1e-6 and s["SIM"] > 1 - 1e-6 and s["NSS"] > 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        saliency_kld(np.ones((2, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="2-D"):
        saliency_sim(np.ones((2, 2, 2)), np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        saliency_nss(np.array([[np.nan, 1.0]]), np.ones((1, 2)))


def _cv2_inter_linear_reference(src: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """cv2.resize(..., INTER_LINEAR) on a float map, written out from OpenCV's ``resize`` source
    (imgproc/src/resize.cpp, ``resizeGeneric_`` coefficient set-up): for each output index d the source
    coordinate is f = (d + 0.5)·scale − 0.5, s = floor(f), weight a = f − s; s < 0 clamps to (s=0, a=0) and
    s ≥ n − 1 clamps to (s=n−1, a=0); the value is (1 − a)·src[s] + a·src[s + 1], rows then columns.
    (cv2 switches INTER_LINEAR to INTER_AREA for an exact 2× downscale; both give the 2×2 mean there.)"""

    def taps(n_in: int, n_out: int) -> list[tuple[int, int, float]]:
        scale = n_in / n_out
        out = []
        for d in range(n_out):
            f = (d + 0.5) * scale - 0.5
            s = math.floor(f)
            a = f - s
            if s < 0:
                s, a = 0, 0.0
            if s >= n_in - 1:
                s, a = n_in - 1, 0.0
            out.append((s, min(s + 1, n_in - 1), a))
        return out

    rows = np.array([[(1 - a) * src[s0, x] + a * src[s1, x] for x in range(src.shape[1])]
                     for s0, s1, a in taps(src.shape[0], out_h)])  # fmt: skip
    return np.array([[(1 - a) * rows[y, s0] + a * rows[y, s1] for s0, s1, a in taps(src.shape[1], out_w)]
                     for y in range(out_h)])  # fmt: skip


@pytest.mark.parametrize("shape", [(17, 23), (224, 224), (448, 300), (5, 5), (301, 97)])
def test_locate_resize_matches_cv2_inter_linear_reference(shape):
    # Up- and down-scaling, odd sizes and the identity: the torch resize must equal OpenCV's rule.
    x = np.random.default_rng(sum(shape)).random(shape)
    np.testing.assert_allclose(locate_resize(x), _cv2_inter_linear_reference(x, 224, 224), atol=1e-10)


def test_cv2_reference_on_a_hand_example():
    # 2 -> 4 upscale: f = (d + .5)/2 − .5 = −.25, .25, .75, 1.25 -> clamp, a=.25, a=.75, clamp.
    ref = _cv2_inter_linear_reference(np.array([[0.0, 4.0]]), 1, 4)
    np.testing.assert_allclose(ref, [[0.0, 1.0, 3.0, 4.0]])
