"""Mel front end: exact framing, Slaney filters equal librosa's, librosa-equal log-mel, image round trip,
Griffin-Lim keeps pitch."""

import math

import numpy as np
import pytest
import torch

from fourfold.audio.mel import (
    MelConfig,
    griffin_lim,
    image_to_mel,
    mel_filters,
    mel_spectrogram,
    mel_to_image,
)

PRESETS = [MelConfig.auffusion(), MelConfig.audioldm(), MelConfig.bestrq(), MelConfig.tiny()]


def test_auffusion_clip_gives_1024_frames():
    cfg = MelConfig.auffusion()
    mel = mel_spectrogram(torch.randn(2, 163840) * 0.1, cfg)
    assert mel.shape == (2, 256, 1024)
    assert cfg.num_frames(163840) == 1024


@pytest.mark.parametrize("cfg", PRESETS, ids=["auffusion", "audioldm", "bestrq", "tiny"])
@pytest.mark.parametrize("n", [4800, 4801, 5279])
def test_frames_are_floor_samples_over_hop(cfg, n):
    assert mel_spectrogram(torch.randn(n), cfg).shape == (cfg.n_mels, n // cfg.hop_length)


def test_bestrq_is_50_hz_80_bins():
    cfg = MelConfig.bestrq()
    assert cfg.frame_rate == 50 and mel_spectrogram(torch.randn(24000), cfg).shape == (80, 50)


@pytest.mark.parametrize("cfg", PRESETS, ids=["auffusion", "audioldm", "bestrq", "tiny"])
def test_filters_match_librosa_slaney(cfg):
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.f_min, fmax=cfg.fmax
    )
    ours = mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, float(cfg.f_min), cfg.fmax)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)


def test_log_mel_matches_librosa_reference():
    librosa = pytest.importorskip("librosa")
    cfg = MelConfig.auffusion()
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.2
    y = x / np.abs(x).max() * 0.95
    y = np.pad(y, (cfg.pad_left, cfg.pad_right), mode="reflect")
    spec = np.abs(librosa.stft(y, n_fft=2048, hop_length=160, win_length=1024, window="hann", center=False))
    ref = np.log(
        np.maximum(librosa.filters.mel(sr=16000, n_fft=2048, n_mels=256, fmin=0, fmax=8000) @ spec, 1e-5)
    )
    ours = mel_spectrogram(torch.from_numpy(x), cfg).numpy()
    assert ours.shape == ref.shape == (256, 100)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_peak_normalisation_and_silence():
    cfg = MelConfig.tiny()
    x = torch.randn(8000)
    torch.testing.assert_close(mel_spectrogram(x, cfg), mel_spectrogram(x * 0.01, cfg), atol=1e-4, rtol=0)
    silent = mel_spectrogram(torch.zeros(8000), cfg)
    assert torch.isfinite(silent).all() and silent.max() <= cfg.log_min + 1e-3


def test_image_round_trip_and_layout():
    cfg = MelConfig.tiny()
    mel = mel_spectrogram(torch.randn(2, 8000) * 0.3, cfg)
    image, clipped = mel_to_image(mel, cfg, return_clipped=True)
    assert image.shape == (2, 3, 64, 50) and image.min() >= -1 and image.max() <= 1
    assert clipped == int(((mel < cfg.log_min) | (mel > cfg.log_max)).sum())
    torch.testing.assert_close(
        image_to_mel(image, cfg), mel.clamp(cfg.log_min, cfg.log_max), atol=1e-5, rtol=0
    )
    # frequency is flipped: the lowest band is the bottom row of the picture
    torch.testing.assert_close(
        image[:, 0, -1], (mel[:, 0] - cfg.log_min) / (cfg.log_max - cfg.log_min) * 2 - 1
    )
    assert mel_to_image(mel, cfg, channels=1).shape == (2, 1, 64, 50)


def test_griffin_lim_keeps_a_sines_pitch():
    cfg, sr = MelConfig.tiny(), 16000
    t = torch.arange(sr) / sr
    for freq in (440.0, 1250.0):
        wav = griffin_lim(mel_spectrogram(0.5 * torch.sin(2 * math.pi * freq * t), cfg), cfg, n_iter=16)
        assert wav.shape == (sr,)
        spectrum = np.abs(np.fft.rfft(wav.numpy()))
        assert abs(np.argmax(spectrum) * sr / len(wav) - freq) < 8


def test_griffin_lim_beats_random_phase():
    cfg = MelConfig.tiny()
    x = torch.sin(2 * math.pi * 300 * torch.arange(8000) / 16000) * torch.linspace(0, 1, 8000)
    mel = mel_spectrogram(x, cfg)
    err0 = (mel_spectrogram(griffin_lim(mel, cfg, n_iter=0), cfg) - mel).abs().mean()
    err = (mel_spectrogram(griffin_lim(mel, cfg, n_iter=32), cfg) - mel).abs().mean()
    assert err < 0.6 * err0


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="win_length"):
        MelConfig(win_length=4096)
    with pytest.raises(ValueError, match="log_mode"):
        MelConfig(log_mode="log10")
    with pytest.raises(ValueError, match="too short"):
        mel_spectrogram(torch.randn(100), MelConfig.auffusion())
