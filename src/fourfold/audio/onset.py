"""Onset detection in torch (spectral flux + peak picking) and CondFoleyGen's onset matching.

Detection follows ``librosa.onset.onset_detect`` (librosa 0.11) step for step, in torch:

1. power mel spectrogram: centred STFT (zero padding), Hann ``n_fft`` = 2048, hop 512, 128 Slaney bands
   up to Nyquist; ``10·log10(max(S, 1e-10))`` floored at its maximum − 80 dB (``power_to_db``);
2. spectral flux: ``mean_f max(0, S[f, t] − S[f, t−1])``, shifted right by ``1 + n_fft // (2·hop)`` frames;
3. min-max normalise to [0, 1];
4. peak picking (``librosa.util.peak_pick``): frame ``n`` is an onset if it is the maximum of
   ``x[n − pre_max : n + post_max]``, at least ``mean(x[n − pre_avg : n + post_avg]) + delta`` (windows cut
   at the edges), and more than ``wait`` frames after the previous onset. Window lengths are librosa's
   (30 ms, 0, 100 ms, 100 ms, 30 ms) in frames.

Matching (CondFoleyGen ``predict_onset.py``, https://github.com/XYPB/CondFoleyGen, with its defects fixed
as the Draw an Audio spec §3/§6 lists): see :func:`match_onsets`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from fourfold.audio.mel import mel_filters

__all__ = [
    "ONSET_SR",
    "OnsetMatch",
    "detect_onsets",
    "match_onsets",
    "onset_confidence",
    "onset_strength",
    "peak_pick",
]

ONSET_SR = 22050  # CondFoleyGen detects at librosa's default rate
HOP = 512


def onset_strength(
    wav, sr: int = ONSET_SR, hop_length: int = HOP, n_fft: int = 2048, n_mels: int = 128
) -> torch.Tensor:
    """Steps 1-2: spectral-flux envelope, ``(samples,)`` -> ``(frames,)`` or ``(batch, samples)`` -> ``(batch, frames)``.

    ``frames = 1 + samples // hop_length`` (centred frames, as librosa).
    """
    x = torch.as_tensor(wav).float()
    squeeze = x.ndim == 1
    x = x[None] if squeeze else x
    window = torch.hann_window(n_fft, periodic=True, dtype=x.dtype, device=x.device)
    spec = torch.stft(
        x, n_fft, hop_length, window=window, center=True, pad_mode="constant", return_complex=True
    )
    power = spec.real.square() + spec.imag.square()
    fb = torch.from_numpy(mel_filters(sr, n_fft, n_mels, 0.0, sr / 2.0).copy()).to(x)
    mel = torch.einsum("mf,bft->bmt", fb, power)
    db = 10.0 * torch.log10(mel.clamp_min(1e-10))
    db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - 80.0)  # power_to_db(top_db=80)
    flux = (db[..., 1:] - db[..., :-1]).clamp_min(0.0).mean(dim=1)  # (b, t-1)
    shift = 1 + n_fft // (2 * hop_length)
    env = F.pad(flux, (shift, 0))[..., : db.shape[-1]]
    return env[0] if squeeze else env


def peak_pick(
    x: torch.Tensor, pre_max: int, post_max: int, pre_avg: int, post_avg: int, delta: float, wait: int
) -> np.ndarray:
    """Step 4 on one envelope ``(frames,)``: indices of the picked peaks (int64 numpy)."""
    n = x.shape[-1]
    mov_max = F.max_pool1d(
        F.pad(x[None, None], (pre_max, max(post_max - 1, 0)), value=-math.inf), pre_max + post_max, stride=1
    )[0, 0]
    csum = F.pad(torch.cumsum(x.double(), 0), (1, 0))
    idx = torch.arange(n)
    lo, hi = (idx - pre_avg).clamp(0, n), (idx + post_avg).clamp(0, n)
    mov_avg = ((csum[hi] - csum[lo]) / (hi - lo).clamp_min(1)).to(x.dtype)
    detections = x * (x == mov_max)
    detections = detections * (detections >= mov_avg + delta)
    peaks, last = [], -math.inf
    for i in torch.nonzero(detections).flatten().tolist():
        if i > last + wait:
            peaks.append(i)
            last = i
    return np.asarray(peaks, dtype=np.int64)


def detect_onsets(
    wav,
    sr: int,
    *,
    delta: float = 0.07,
    hop_length: int = HOP,
    units: str = "seconds",
    detect_sr: int = ONSET_SR,
) -> np.ndarray | list[np.ndarray]:
    """Onsets of ``(samples,)`` (-> array) or ``(batch, samples)`` (-> list of arrays) at ``sr``.

    Audio is resampled to ``detect_sr`` (22.05 kHz) first. ``units``: ``"seconds"``, ``"samples"``
    (at ``detect_sr``, frame index · hop, as librosa) or ``"frames"``. CondFoleyGen uses ``delta=0.3``.
    """
    from fourfold.audio.io import resample

    if units not in ("seconds", "samples", "frames"):
        raise ValueError(f"units must be 'seconds', 'samples' or 'frames', got {units!r}")
    x = np.asarray(wav.detach().cpu() if isinstance(wav, torch.Tensor) else wav, dtype=np.float32)
    squeeze = x.ndim == 1
    x = x[None] if squeeze else x
    if sr != detect_sr:
        x = resample(x, sr, detect_sr)
    env = onset_strength(torch.from_numpy(x), detect_sr, hop_length)
    frames_of = lambda s: int(s * detect_sr // hop_length)  # noqa: E731 - librosa's integer frame windows
    out = []
    for e in env:
        e = e - e.min()
        e = e / (e.max() + torch.finfo(e.dtype).tiny)
        if not e.any() or not torch.isfinite(e).all():
            peaks = np.zeros(0, np.int64)
        else:
            peaks = peak_pick(
                e,
                frames_of(0.03),
                frames_of(0.0) + 1,
                frames_of(0.10),
                frames_of(0.10) + 1,
                delta,
                frames_of(0.03),
            )
        if units == "samples":
            peaks = peaks * hop_length
        elif units == "seconds":
            peaks = peaks * hop_length / detect_sr
        out.append(peaks)
    return out[0] if squeeze else out


def onset_confidence(onsets_s: np.ndarray, wav: np.ndarray, sr: int, window_s: float = 0.05) -> np.ndarray:
    """Confidence of each onset: max of min-max-normalised ``|wav|`` within ``±window_s`` (window clamped
    at the clip start, unlike CondFoleyGen whose negative start index wraps around)."""
    a = np.abs(np.asarray(wav, dtype=np.float64))
    span = a.max() - a.min()
    a = (a - a.min()) / span if span > 0 else np.zeros_like(a)
    w = round(window_s * sr)
    conf = []
    for t in np.asarray(onsets_s, dtype=np.float64):
        c = round(t * sr)
        lo, hi = max(0, c - w), min(a.size, c + w)
        conf.append(a[lo:hi].max() if hi > lo else 0.0)
    return np.asarray(conf, dtype=np.float64)


def _nms(onsets_s: np.ndarray, conf: np.ndarray, window_s: float) -> np.ndarray:
    """Keep the most confident onset, drop others within ``window_s`` of a kept one (without mutating a
    list while iterating it, CondFoleyGen's defect). Returns kept indices in time order."""
    order = np.argsort(-conf, kind="stable")
    kept: list[int] = []
    for i in order:
        if all(abs(onsets_s[i] - onsets_s[k]) >= window_s for k in kept):
            kept.append(int(i))
    return np.asarray(sorted(kept, key=lambda k: onsets_s[k]), dtype=np.int64)


@dataclass
class OnsetMatch:
    """One clip's matching. ``labels``/``scores`` feed ``average_precision_score``: hit (1, conf),
    missed reference (1, 0), unmatched generated onset (0, conf)."""

    labels: np.ndarray
    scores: np.ndarray
    hits: int
    num_ref: int
    num_gen: int  # raw detections, before NMS (the count accuracy compares these)


def match_onsets(
    gen_onsets_s,
    ref_onsets_s,
    gen_wav,
    sr: int,
    *,
    conf_window_s: float = 0.05,
    nms_window_s: float = 0.05,
    match_window_s: float = 0.1,
) -> OnsetMatch:
    """CondFoleyGen onset matching for one clip (Draw an Audio spec §6, steps 2-3).

    Generated onsets get a confidence (:func:`onset_confidence`), then NMS with ``nms_window_s``. Each
    reference onset, in time order, takes the unused generated onset within ``match_window_s`` whose
    ``|gen|`` at its sample is largest: a hit (1, conf); without one it is a miss (1, 0) — also after the
    generated onsets run out (CondFoleyGen's ``break`` skipped those, inflating AP). Generated onsets
    left unused are false alarms (0, conf).
    """
    gen = np.sort(np.asarray(gen_onsets_s, dtype=np.float64).reshape(-1))
    ref = np.sort(np.asarray(ref_onsets_s, dtype=np.float64).reshape(-1))
    wav = np.asarray(
        gen_wav.detach().cpu() if isinstance(gen_wav, torch.Tensor) else gen_wav, dtype=np.float64
    )
    if wav.ndim != 1:
        raise ValueError(f"gen_wav must be mono (samples,), got {wav.shape}")
    conf = onset_confidence(gen, wav, sr, conf_window_s)
    keep = _nms(gen, conf, nms_window_s)
    cand, cand_conf = gen[keep], conf[keep]
    amp = (
        np.abs(wav[np.clip(np.round(cand * sr).astype(np.int64), 0, max(wav.size - 1, 0))])
        if wav.size
        else cand * 0
    )
    used = np.zeros(cand.size, dtype=bool)
    labels, scores, hits = [], [], 0
    for r in ref:
        near = np.flatnonzero(~used & (np.abs(cand - r) <= match_window_s))
        if near.size:
            j = near[np.argmax(amp[near])]
            used[j] = True
            labels.append(1)
            scores.append(cand_conf[j])
            hits += 1
        else:
            labels.append(1)
            scores.append(0.0)
    for j in np.flatnonzero(~used):
        labels.append(0)
        scores.append(cand_conf[j])
    return OnsetMatch(np.asarray(labels, np.int64), np.asarray(scores, np.float64), hits, ref.size, gen.size)
