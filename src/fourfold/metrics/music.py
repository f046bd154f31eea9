"""Music metrics for song generation (SongCreator spec §6): harmony proxies, MCD, error rates, FAD embedder.

* **Key**: Krumhansl–Kessler profile correlation over a pitch-class histogram (:func:`estimate_key`),
  scored exactly (:func:`key_agreement`) and with the MIREX weighted score (:func:`key_weighted_score`,
  as ``mir_eval.key.weighted_score``: same 1, fifth above 0.5, relative 0.3, parallel 0.2).
* **Onsets**: the fraction of vocal onsets within ±40 ms of the accompaniment's eighth-note grid.
* **Tempo**: agreement within 8 %, with ×2 and ×½ accepted.
* **MCD** (``mcd_mel`` variant): (10/ln 10)·√(2·Σ_{d=1..24}(c_d − ĉ_d)²) over DTW-aligned frames, c = DCT-II
  (ortho) of the log-mel, c_0 excluded.
* **Error rates**: Levenshtein (S + D + I) / N over unit sequences (phones, vowels).
* **FAD fallback embedder** ``mfcc_stats``: per 0.96 s window, the mean and std of 20 MFCCs; pair with
  :func:`fourfold.metrics.audio.fad_from_frames`. It is not VGGish: report it under its own name.

Keys are indices ``pc + 12·minor`` (0 = C major, 12 = C minor).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "KK_MAJOR",
    "KK_MINOR",
    "chroma_from_audio",
    "error_rate",
    "estimate_key",
    "key_agreement",
    "key_weighted_score",
    "log_mel_100hz_config",
    "mcd_mel",
    "mfcc_stats_frames",
    "onsets_on_grid",
    "tempo_agreement",
]

# Krumhansl & Kessler (1982) probe-tone profiles, C major / C minor.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def estimate_key(pc_histogram: Sequence[float], candidates: Sequence[int] | None = None) -> int:
    """Key index (0..23) whose rotated KK profile correlates best with a 12-bin pitch-class histogram.

    ``candidates`` restricts the answer to a set of keys (a closed-set test such as the SongCreator BCA
    ablation with 4 keys). An all-zero histogram has no key: ``ValueError``.
    """
    h = np.asarray(pc_histogram, dtype=np.float64)
    if h.shape != (12,):
        raise ValueError(f"expected a 12-bin pitch-class histogram, got shape {h.shape}")
    if not np.any(h):
        raise ValueError("empty pitch-class histogram: no key to estimate")
    scores = []
    for profile in (KK_MAJOR, KK_MINOR):
        for tonic in range(12):
            p = np.roll(profile, tonic)
            scores.append(np.corrcoef(h, p)[0, 1] if h.std() > 0 else -np.abs(p - p.mean()).sum())
    scores = np.asarray(scores, dtype=np.float64)
    if candidates is not None:
        allowed = np.full(24, -np.inf)
        idx = [int(k) for k in candidates]
        if not idx or any(not 0 <= k < 24 for k in idx):
            raise ValueError(f"candidates must be key indices in 0..23, got {list(candidates)}")
        allowed[idx] = scores[idx]
        scores = allowed
    return int(np.nanargmax(scores))


def key_agreement(a: int, b: int) -> bool:
    return int(a) == int(b)


def key_weighted_score(reference: int, estimate: int) -> float:
    """MIREX key score as in ``mir_eval.key.weighted_score``."""
    rt, rm = reference % 12, reference >= 12
    et, em = estimate % 12, estimate >= 12
    if (rt, rm) == (et, em):
        return 1.0
    if rm == em and et == (rt + 7) % 12:
        return 0.5
    if rm != em and ((not rm and et == (rt + 9) % 12) or (rm and et == (rt + 3) % 12)):
        return 0.3
    if rm != em and rt == et:
        return 0.2
    return 0.0


def chroma_from_audio(
    wav: np.ndarray, sr: int, *, n_fft: int = 4096, hop: int = 1024, fmin: float = 60.0, fmax: float = 2000.0
) -> np.ndarray:
    """Total pitch-class energy ``(12,)`` of a mono clip (magnitude STFT bins folded onto pitch classes)."""
    x = np.asarray(wav, dtype=np.float64)
    if x.ndim != 1 or len(x) < n_fft:
        raise ValueError(f"need a mono clip of at least {n_fft} samples, got shape {x.shape}")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    mag = np.abs(np.fft.rfft(frames, axis=-1)).sum(0)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    keep = (freqs >= fmin) & (freqs <= fmax)
    pcs = np.round(12 * np.log2(freqs[keep] / 440.0) + 69).astype(int) % 12
    return np.bincount(pcs, weights=mag[keep], minlength=12)


def onsets_on_grid(
    onsets: Sequence[float], beat_times: Sequence[float], *, tolerance: float = 0.04, subdivision: int = 2
) -> float:
    """Fraction of ``onsets`` (s) within ``tolerance`` of the grid that divides each beat in ``subdivision``
    (2 = eighth notes), the grid extended past the last beat at the final beat period. NaN without onsets."""
    onsets = np.asarray(onsets, dtype=np.float64)
    beats = np.asarray(beat_times, dtype=np.float64)
    if onsets.size == 0:
        return float("nan")
    if beats.size < 2:
        raise ValueError("need at least two beat times to define a grid")
    period = beats[-1] - beats[-2]
    extended = np.concatenate([beats, beats[-1] + period * np.arange(1, 64)])
    grid = (extended[:-1, None] + np.diff(extended)[:, None] * np.arange(subdivision) / subdivision).ravel()
    dist = np.abs(onsets[:, None] - grid[None]).min(1)
    return float(np.mean(dist <= tolerance + 1e-9))


def tempo_agreement(reference_bpm: float, estimate_bpm: float, *, tolerance: float = 0.08) -> bool:
    """Within ``tolerance`` (relative) of the reference, its double or its half."""
    return any(
        abs(estimate_bpm - f * reference_bpm) <= tolerance * f * reference_bpm for f in (1.0, 2.0, 0.5)
    )


def _dtw_path(cost: np.ndarray) -> list[tuple[int, int]]:
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    i, j, path = n, m, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        step = np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return path[::-1]


def mcd_mel(reference_log_mel: np.ndarray, generated_log_mel: np.ndarray, *, order: int = 24) -> float:
    """MCD (dB) between log-mels ``(n_mels, frames)`` (the ``mcd_mel`` variant), DTW-aligned, c_0 excluded."""
    from scipy.fft import dct

    r, g = np.asarray(reference_log_mel, np.float64), np.asarray(generated_log_mel, np.float64)
    if r.ndim != 2 or g.ndim != 2 or r.shape[0] != g.shape[0] or r.shape[0] <= order:
        raise ValueError(
            f"need log-mels (n_mels > {order}, frames) with equal n_mels, got {r.shape} and {g.shape}"
        )
    cr = dct(r, type=2, norm="ortho", axis=0)[1 : order + 1].T
    cg = dct(g, type=2, norm="ortho", axis=0)[1 : order + 1].T
    cost = np.sqrt(((cr[:, None] - cg[None]) ** 2).sum(-1))
    path = _dtw_path(cost)
    k = 10.0 / np.log(10.0) * np.sqrt(2.0)
    return float(np.mean([k * cost[i, j] for i, j in path]))


def error_rate(reference: Sequence, hypothesis: Sequence) -> float:
    """Levenshtein (S + D + I) / N of two unit sequences (PER over phones, vowel error rate...)."""
    ref, hyp = list(reference), list(hypothesis)
    if not ref:
        raise ValueError("the reference sequence is empty")
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


def log_mel_100hz_config(sr: int):
    """The 64-band log-mel at 100 frames/s (1024-point window, no peak normalisation) that ``mfcc_stats``
    and ``mcd_mel`` inputs are computed on."""
    from fourfold.audio.mel import MelConfig

    return MelConfig(sample_rate=sr, n_fft=1024, win_length=1024, hop_length=sr // 100, n_mels=64, f_max=None,
                     peak_norm=None)  # fmt: skip


def mfcc_stats_frames(wav: np.ndarray, sr: int, *, window_s: float = 0.96, n_mfcc: int = 20) -> np.ndarray:
    """``mfcc_stats`` embedder: ``(windows, 2·n_mfcc)`` — mean and std of MFCCs per non-overlapping window."""
    import torch
    from scipy.fft import dct

    from fourfold.audio.mel import mel_spectrogram

    mel = mel_spectrogram(
        torch.as_tensor(np.asarray(wav, np.float32)), log_mel_100hz_config(sr)
    ).numpy()  # (64, frames) at 100 Hz
    mfcc = dct(mel, type=2, norm="ortho", axis=0)[:n_mfcc]
    per = max(1, round(window_s * 100))
    n = mfcc.shape[1] // per
    if n == 0:
        raise ValueError(f"clip shorter than one {window_s} s window")
    w = mfcc[:, : n * per].reshape(n_mfcc, n, per)
    return np.concatenate([w.mean(-1), w.std(-1)], axis=0).T
