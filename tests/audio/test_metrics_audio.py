"""Audio metrics: FD/FAD/KL/IS against closed forms; loudness and onset metrics on known signals."""

import numpy as np
import pytest
import torch

from fourfold.metrics.audio import (
    audio_fd,
    embed_clips,
    fad_from_frames,
    inception_score,
    kl_divergence,
    loudness_metrics,
    onset_metrics,
    pair_audio_files,
    prepare_eval_audio,
)


def test_fd_identity_and_gaussian_closed_form():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 3))
    assert abs(audio_fd(x, x)) < 1e-6
    y = rng.standard_normal((4000, 3)) * 2.0 + 1.0  # N(1, 4I) vs N(0, I): 3·1 + 3·(1 + 4 − 2·2) = 6
    assert audio_fd(x, y) == pytest.approx(6.0, rel=0.1)
    frames_x = [x[:2000], x[2000:]]
    assert fad_from_frames(frames_x, [y[:100], y[100:]]) == pytest.approx(audio_fd(x, y), rel=1e-9)


def test_inception_score_of_k_confident_classes_is_k():
    k, n = 5, 500
    logits = np.full((n, 10), -30.0)
    logits[np.arange(n), np.arange(n) % k] = 30.0
    mean, std = inception_score(logits, shuffle=False)  # every chunk holds the 5 classes equally
    assert mean == pytest.approx(k, rel=1e-6) and std < 1e-6
    shuffled, _ = inception_score(logits)  # random chunks: exp(entropy of each chunk's class mix) ≤ k
    assert 4.5 < shuffled <= k
    uniform = inception_score(np.zeros((100, 10)))
    assert uniform[0] == pytest.approx(1.0)


def test_kl_divergence():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((8, 6))
    same = kl_divergence(a, a)
    assert abs(same["kl_softmax"]) < 1e-4 and abs(same["kl_sigmoid"]) < 1e-4
    b = rng.standard_normal((8, 6))
    p, q = torch.tensor(b).softmax(1), torch.tensor(a).softmax(1)  # KL(ref ‖ gen), ref = b
    want = float((p * (p.log() - (q + 1e-6).log())).sum() / 8)
    assert kl_divergence(a, b)["kl_softmax"] == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match="paired"):
        kl_divergence(a, b[:4])


def test_embedding_and_preprocessing(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, -1)), torch.nn.Conv1d(1, 4, 400, stride=160), torch.nn.ReLU()
    )

    def embedder(wav):  # tiny random "PANNs": per-clip and per-frame outputs
        h = net(wav)  # (b, 4, frames)
        return {"2048": h.mean(-1), "frames": h.transpose(1, 2), "logits": h.amax(-1)}

    clips = [
        prepare_eval_audio(np.random.default_rng(i).standard_normal(8000 + 100 * i), 8000) for i in range(3)
    ]
    assert all(c.shape[0] >= 32000 and abs(c.mean()) < 0.05 for c in clips)
    per_clip = embed_clips(embedder, clips, key="2048", batch_size=2)
    assert len(per_clip) == 3 and per_clip[0].shape == (4,)
    frames = embed_clips(embedder, clips, key="frames")
    assert frames[0].ndim == 2 and frames[0].shape[1] == 4
    with pytest.raises(KeyError, match="logits"):
        embed_clips(embedder, clips)
    (tmp_path / "g").mkdir()
    (tmp_path / "r").mkdir()
    for name in ("a", "b"):
        (tmp_path / "g" / f"{name}.wav").write_bytes(b"")
        (tmp_path / "r" / f"{name}.wav").write_bytes(b"")
    assert [p[0].stem for p in pair_audio_files(tmp_path / "g", tmp_path / "r")] == ["a", "b"]
    (tmp_path / "g" / "c.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="'c'"):
        pair_audio_files(tmp_path / "g", tmp_path / "r")


def test_loudness_metrics():
    sr = 16000
    t = np.arange(sr) / sr
    env = np.interp(t, [0, 0.5, 1], [0.05, 1.0, 0.05])
    ref = (env * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    same = loudness_metrics([ref], [ref], sr)
    assert same["loudness_r"] == pytest.approx(1.0) and same["loudness_db_mae"] < 1e-9
    flipped = (env[::-1].copy() * 0 + (1.05 - env)) * np.sin(2 * np.pi * 300 * t)
    worse = loudness_metrics([flipped.astype(np.float32)], [ref], sr)
    assert worse["loudness_r"] < -0.5 and worse["loudness_db_mae"] > 3
    flat = np.sin(2 * np.pi * 300 * t).astype(np.float32)
    assert loudness_metrics([ref], [flat], sr)["loudness_r_skipped"] == 1.0


def test_onset_metrics_clicks_are_perfect_and_misses_count(clicks):
    sr, times = 22050, [0.15, 0.4, 0.9, 1.5]
    x = clicks(times, sr=sr)
    perfect = onset_metrics([x], sr, ref_wavs=[x])
    assert (
        perfect["onset_hit_acc"] == 1.0 and perfect["onset_ap"] == 1.0 and perfect["onset_count_acc"] == 1.0
    )
    true = onset_metrics([x], sr, ref_onsets=[times])
    assert true["onset_hit_acc"] == 1.0 and true["onset_ap"] == 1.0
    # two references missed, one false alarm at 1.2 s: the misses (score 0) rank below the false alarm
    half = onset_metrics([clicks([*times[:2], 1.2], sr=sr)], sr, ref_onsets=[times])
    assert half["onset_hit_acc"] == 0.5 and half["onset_count_acc"] == 0.0
    # AP: whatever the confidences' order, recall 1 is only reached at precision 4/5 (threshold 0)
    assert 0.6 < half["onset_ap"] < 0.95
    none = onset_metrics([x], sr, ref_onsets=[[]])
    assert none["onset_ap_excluded"] == 1.0 and np.isnan(none["onset_ap"])
