"""Loudness curves of known envelopes; onset detection finds clicks; CondFoleyGen matching edge cases."""

import json
import math

import numpy as np
import pytest
import torch

from fourfold.audio.loudness import LoudnessCurve, LoudnessError, loudness_curve, loudness_db
from fourfold.audio.mel import MelConfig
from fourfold.audio.onset import detect_onsets, match_onsets, onset_strength

SR = 16000


def _stepped_sine(high=1.0, low=0.1, seconds=1.0):
    t = torch.arange(int(seconds * SR)) / SR
    return torch.where(t < seconds / 2, high, low) * torch.sin(2 * math.pi * 500 * t)


def test_loudness_db_of_a_known_envelope():
    cfg = MelConfig.tiny()
    db = loudness_db(_stepped_sine(), cfg)
    assert db.shape == (100,)
    # peak-normalised to 0.95: a sine's RMS is peak/√2; the quiet half is 20 dB lower
    loud = 20 * math.log10(0.95 / math.sqrt(2))
    torch.testing.assert_close(db[5:45], torch.full((40,), loud), atol=0.05, rtol=0)
    torch.testing.assert_close(db[55:95], torch.full((40,), loud - 20), atol=0.05, rtol=0)
    silent = loudness_db(torch.zeros(4000), cfg)
    assert torch.all(silent == -100.0)  # 20·log10(1e-5)


def test_loudness_curve_smoothed_normalised_pooled():
    cfg = MelConfig.tiny()
    x = _stepped_sine()
    curve = loudness_curve(x, cfg, pool=4)
    assert curve.shape == (25,) and curve.min() >= 0 and curve.max() <= 1
    loud = (80 + 20 * math.log10(0.95 / math.sqrt(2))) / 80
    assert abs(curve[2].item() - loud) < 0.01 and abs(curve[-3].item() - (loud - 0.25)) < 0.01
    # the low-pass makes the step gradual but keeps it centred
    raw = loudness_curve(x, cfg, smooth=False)
    smooth = loudness_curve(x, cfg)
    assert (raw[48:52] - smooth[48:52]).abs().max() > 0.01
    assert abs(smooth[50].item() - (raw[10].item() + raw[90].item()) / 2) < 0.05
    assert loudness_curve(torch.stack([x, 0.1 * x]), cfg).shape == (2, 100)
    # peak normalisation: a quieter copy of the same clip has the same curve
    torch.testing.assert_close(loudness_curve(0.1 * x, cfg), smooth, atol=1e-4, rtol=0)


def test_loudness_curve_object(tmp_path):
    cfg = MelConfig.tiny()
    c = LoudnessCurve.from_audio(_stepped_sine().numpy(), SR, cfg, pool=4)
    assert c.values.shape == (25,) and c.times is None
    c.save(tmp_path / "c.json")
    np.testing.assert_allclose(LoudnessCurve.load(tmp_path / "c.json").values, c.values)
    drawn = LoudnessCurve.from_points([0.0, 1.0, 2.0], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(drawn.resample(4, duration=2.0), [0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(LoudnessCurve(np.array([0.0, 1.0])).resample(4), [0.0, 0.25, 0.75, 1.0])
    (tmp_path / "list.json").write_text(json.dumps([0.1, 0.2]))
    assert LoudnessCurve.load(tmp_path / "list.json").values.tolist() == [0.1, 0.2]
    with pytest.raises(LoudnessError, match="NaN"):
        LoudnessCurve(np.array([0.1, np.nan]))
    with pytest.raises(LoudnessError, match=r"\[0, 1\]"):
        LoudnessCurve(np.array([0.1, 1.5]))
    with pytest.raises(LoudnessError, match="increasing"):
        LoudnessCurve.from_points([0.0, 0.0], [0.1, 0.2])
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(LoudnessError, match=r"bad\.json"):
        LoudnessCurve.load(tmp_path / "bad.json")


def test_onsets_found_at_known_times(clicks):
    times = [0.15, 0.3, 0.75, 1.1, 1.6]
    x = clicks(times)
    found = detect_onsets(x, 22050, delta=0.3)
    assert len(found) == len(times)
    assert np.abs(found - np.asarray(times)).max() < 0.05  # within two 512-sample frames
    # any input rate: resampled to 22.05 kHz first
    x16 = clicks(times, sr=16000)
    assert np.abs(detect_onsets(x16, 16000, delta=0.3) - np.asarray(times)).max() < 0.05
    batch = detect_onsets(np.stack([x, x]), 22050, delta=0.3, units="samples")
    assert isinstance(batch, list) and np.array_equal(batch[0], batch[1]) and batch[0].dtype.kind == "i"
    assert onset_strength(torch.from_numpy(x)).shape == (1 + len(x) // 512,)
    assert detect_onsets(np.zeros(22050, np.float32), 22050).size == 0


def test_match_onsets_hits_misses_and_false_alarms(clicks):
    sr = 22050
    times = [0.02, 0.5, 1.0]  # one inside the first 50 ms: its confidence window is clamped at 0
    x = clicks(times, sr=sr)
    perfect = match_onsets(times, times, x, sr)
    assert perfect.hits == 3 and perfect.labels.tolist() == [1, 1, 1] and (perfect.scores > 0).all()
    # generated onsets run out before the references do: the later references still count as misses
    few = match_onsets([0.02], times, x, sr)
    assert few.hits == 1 and few.labels.tolist() == [1, 1, 1] and few.scores[1:].tolist() == [0.0, 0.0]
    # an extra generated onset is a false alarm; one 20 ms from another is suppressed by NMS
    extra = match_onsets([0.02, 0.5, 0.52, 1.0, 1.5], times, x, sr)
    assert extra.hits == 3 and extra.labels.tolist() == [1, 1, 1, 0] and extra.num_gen == 5
    far = match_onsets([0.3], [0.5], x, sr)  # 0.2 s away: outside the 0.1 s window
    assert far.hits == 0 and far.labels.tolist() == [1, 0]


@pytest.mark.slow
def test_onset_detection_equals_librosa(clicks):
    """Slow only because librosa's numba JIT costs ~10 s on first use."""
    librosa = pytest.importorskip("librosa")
    for seed in range(3):
        x = clicks(np.sort(np.random.default_rng(seed).uniform(0.1, 1.8, 5)), seed=seed)
        ref_env = librosa.onset.onset_strength(y=x, sr=22050)
        np.testing.assert_allclose(onset_strength(torch.from_numpy(x)).numpy(), ref_env, atol=1e-4)
        for delta in (0.07, 0.3):
            ref = librosa.onset.onset_detect(y=x, sr=22050, units="samples", delta=delta)
            np.testing.assert_array_equal(detect_onsets(x, 22050, delta=delta, units="samples"), ref)
