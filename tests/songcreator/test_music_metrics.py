import math

import numpy as np
import pytest

from fourfold.data.songs import MAJOR, MINOR
from fourfold.metrics.music import (
    chroma_from_audio,
    error_rate,
    estimate_key,
    key_weighted_score,
    mcd_mel,
    mfcc_stats_frames,
    onsets_on_grid,
    tempo_agreement,
)


@pytest.mark.parametrize("key", [0, 7, 12 + 9, 12 + 2])
def test_key_from_scale_histogram(key):
    scale = MINOR if key >= 12 else MAJOR
    h = np.zeros(12)
    for k, s in enumerate(scale):
        h[(key % 12 + s) % 12] = 3.0 if k in (0, 4) else 2.0 if k == 2 else 1.0
    assert estimate_key(h) == key


def test_key_weighted_score():
    assert key_weighted_score(0, 0) == 1.0
    assert key_weighted_score(0, 7) == 0.5  # G major for C major
    assert key_weighted_score(0, 12 + 9) == 0.3  # A minor for C major
    assert key_weighted_score(12 + 9, 0) == 0.3
    assert key_weighted_score(0, 12) == 0.2  # C minor for C major
    assert key_weighted_score(0, 1) == 0.0
    with pytest.raises(ValueError):
        estimate_key(np.zeros(12))


def test_chroma_finds_the_triad():
    sr = 16000
    t = np.arange(sr) / sr
    wav = sum(np.sin(2 * math.pi * 440 * 2 ** (s / 12) * t) for s in (0, 4, 7))  # A major triad
    top = set(np.argsort(chroma_from_audio(wav, sr))[-3:].tolist())
    assert top == {9, 1, 4}


def test_onsets_and_tempo():
    beats = np.arange(0, 4, 0.5)
    assert onsets_on_grid([0.0, 0.25, 0.51, 4.25], beats) == 1.0
    assert onsets_on_grid([0.12, 0.25], beats) == 0.5
    assert math.isnan(onsets_on_grid([], beats))
    assert tempo_agreement(100, 105) and tempo_agreement(100, 198) and tempo_agreement(100, 51)
    assert not tempo_agreement(100, 120)


def test_mcd_and_error_rate():
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(40, 30))
    assert mcd_mel(mel, mel) == 0.0
    stretched = np.repeat(mel, 2, axis=1)  # DTW absorbs a tempo change
    assert mcd_mel(mel, stretched) == pytest.approx(0.0, abs=1e-9)
    assert mcd_mel(mel, mel + rng.normal(size=mel.shape)) > 1.0
    assert error_rate("abc", "abc") == 0 and error_rate("abc", "axc") == pytest.approx(1 / 3)
    assert error_rate(["a", "b"], []) == 1.0


def test_mfcc_stats_frames():
    wav = np.random.default_rng(0).normal(size=16000 * 3).astype(np.float32) * 0.1
    f = mfcc_stats_frames(wav, 16000)
    assert f.shape == (3, 40) and np.isfinite(f).all()
