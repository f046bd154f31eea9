"""Loudness curves: frame RMS in dB on the mel frame grid, smoothed and mapped to [0, 1].

Definition (Draw an Audio spec §2.4, after T-Foley, https://github.com/YoonjinXD/T-FOLEY):

1. peak-normalise the clip as the mel front end does (``MelConfig.peak_norm``);
2. RMS per mel frame: the same reflect padding and hop as :func:`fourfold.audio.mel.mel_spectrogram`,
   a rectangular window of ``win_length`` samples centred in each ``n_fft`` frame;
3. ``L = 20·log10(max(rms, 1e-5))`` dB;
4. zero-phase low-pass: order-4 elliptic, 0.01 dB ripple, 120 dB stop-band, cutoff 0.125·Nyquist of the
   frame rate, ``scipy.signal.filtfilt(method="gust")``;
5. ``ℓ = clip((L + 80) / 80, 0, 1)``;
6. mean-pool by ``pool`` frames (the VAE's time factor: 1024 frames -> 128).

Shapes: waveforms ``(samples,)`` or ``(batch, samples)`` -> curves ``(frames,)`` or ``(batch, frames)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import reduce

from fourfold.audio.mel import MelConfig, normalize_waveform, pad_for_frames
from fourfold.nn import atomic_write_text

__all__ = [
    "DB_FLOOR",
    "LoudnessCurve",
    "LoudnessError",
    "loudness_curve",
    "loudness_db",
    "normalize_db",
    "smooth_db",
]

RMS_FLOOR = 1e-5  # step 3: 20·log10(1e-5) = -100 dB
DB_FLOOR = 80.0  # step 5: -80 dB maps to 0, 0 dB to 1
ELLIPTIC = {"order": 4, "ripple_db": 0.01, "stop_db": 120.0, "cutoff": 0.125}  # step 4 (T-Foley)


class LoudnessError(ValueError):
    """A loudness curve is unusable (NaN, out of [0, 1], empty, unreadable file); the message says which."""


def _batch(wav) -> tuple[torch.Tensor, bool]:
    wav = torch.as_tensor(np.asarray(wav) if not isinstance(wav, torch.Tensor) else wav).float()
    if wav.ndim == 1:
        return wav[None], True
    if wav.ndim == 2:
        return wav, False
    raise ValueError(f"expected a waveform (samples,) or (batch, samples), got shape {tuple(wav.shape)}")


def loudness_db(wav, cfg: MelConfig) -> torch.Tensor:
    """Steps 1-3: frame loudness in dB, ``(batch?, frames)`` with ``frames = floor(samples / hop)``."""
    batch, squeeze = _batch(wav)
    padded = pad_for_frames(normalize_waveform(batch, cfg), cfg)
    frames = padded.unfold(-1, cfg.n_fft, cfg.hop_length)  # (b, t, n_fft), frame k starts at hop·k
    left = (cfg.n_fft - cfg.win_length) // 2
    window = frames[..., left : left + cfg.win_length]
    rms = window.square().mean(dim=-1).sqrt()
    db = 20.0 * torch.log10(rms.clamp_min(RMS_FLOOR))
    return db[0] if squeeze else db


def smooth_db(db: np.ndarray | torch.Tensor) -> np.ndarray:
    """Step 4: zero-phase elliptic low-pass along the last axis (float64 numpy)."""
    from scipy import signal

    x = np.asarray(db.detach().cpu() if isinstance(db, torch.Tensor) else db, dtype=np.float64)
    b, a = signal.ellip(
        ELLIPTIC["order"], ELLIPTIC["ripple_db"], ELLIPTIC["stop_db"], ELLIPTIC["cutoff"], btype="low"
    )
    return np.ascontiguousarray(signal.filtfilt(b, a, x, axis=-1, method="gust"))


def normalize_db(db: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Step 5: ``clip((L + 80) / 80, 0, 1)``."""
    scaled = (db + DB_FLOOR) / DB_FLOOR
    return scaled.clamp(0.0, 1.0) if isinstance(scaled, torch.Tensor) else np.clip(scaled, 0.0, 1.0)


def loudness_curve(wav, cfg: MelConfig, pool: int = 1, smooth: bool = True) -> torch.Tensor:
    """Steps 1-6: ``(samples,)`` -> ``(frames // pool,)``; ``(batch, samples)`` -> ``(batch, frames // pool)``.

    Values in [0, 1], float32. Frames left over after the last full pool window are dropped.
    """
    db = loudness_db(wav, cfg)
    curve = torch.from_numpy(smooth_db(db)).float() if smooth else db.float()
    curve = normalize_db(curve)
    if pool > 1:
        usable = (curve.shape[-1] // pool) * pool
        if usable == 0:
            raise ValueError(f"{curve.shape[-1]} frames are fewer than one pool window of {pool}")
        curve = reduce(curve[..., :usable], "... (t p) -> ... t", "mean", p=pool)
    return curve


@dataclass
class LoudnessCurve:
    """A drawn or extracted loudness curve with values in [0, 1].

    ``values`` ``(points,)``; ``times`` ``(points,)`` in seconds (increasing) or ``None`` for values spread
    evenly over the clip (point i at relative position ``(i + 0.5) / points``).
    """

    values: np.ndarray
    times: np.ndarray | None = None

    def __post_init__(self) -> None:
        v = np.asarray(self.values, dtype=np.float64).reshape(-1)
        if v.size == 0:
            raise LoudnessError("loudness curve is empty")
        if not np.isfinite(v).all():
            raise LoudnessError("loudness curve contains NaN or infinite values")
        if v.min() < 0 or v.max() > 1:
            raise LoudnessError(
                f"loudness values must lie in [0, 1], got range [{v.min():.3g}, {v.max():.3g}]"
            )
        self.values = v
        if self.times is not None:
            t = np.asarray(self.times, dtype=np.float64).reshape(-1)
            if t.shape != v.shape:
                raise LoudnessError(f"loudness curve has {t.size} times for {v.size} values")
            if not np.isfinite(t).all() or np.any(np.diff(t) <= 0):
                raise LoudnessError("loudness curve times must be finite and strictly increasing")
            self.times = t

    @classmethod
    def from_audio(cls, wav, sr: int, cfg: MelConfig, pool: int = 1, smooth: bool = True) -> LoudnessCurve:
        """The curve of a mono waveform ``(samples,)`` at ``sr`` (resampled to ``cfg.sample_rate``)."""
        from fourfold.audio.io import resample

        wav = np.asarray(wav.detach().cpu() if isinstance(wav, torch.Tensor) else wav, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"LoudnessCurve.from_audio wants mono audio (samples,), got {wav.shape}")
        if sr != cfg.sample_rate:
            wav = resample(wav, sr, cfg.sample_rate)
        return cls(loudness_curve(torch.from_numpy(wav), cfg, pool=pool, smooth=smooth).numpy())

    @classmethod
    def from_points(cls, times, values) -> LoudnessCurve:
        """Keyframes: ``times`` (seconds) and ``values``, linearly interpolated between them."""
        return cls(np.asarray(values), np.asarray(times))

    @classmethod
    def load(cls, path: str | os.PathLike) -> LoudnessCurve:
        """``curve.json``: ``{"t": [...], "value": [...]}`` or a plain list of values."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise LoudnessError(f"cannot read loudness curve {path}: {err}") from err
        if isinstance(data, list):
            return cls(np.asarray(data, dtype=np.float64))
        if isinstance(data, dict) and "value" in data:
            return cls(np.asarray(data["value"], dtype=np.float64), data.get("t"))
        raise LoudnessError(f"{path}: expected a list of values or {{'t': [...], 'value': [...]}}")

    def save(self, path: str | os.PathLike) -> None:
        """Write ``curve.json`` atomically."""
        data = {"value": self.values.tolist()}
        if self.times is not None:
            data["t"] = self.times.tolist()
        atomic_write_text(path, json.dumps(data) + "\n")

    def resample(self, num_frames: int, duration: float | None = None) -> np.ndarray:
        """Values at ``num_frames`` frame centres ``(k + 0.5)/num_frames`` of the clip, linear, ``(num_frames,)``.

        Timed curves need the clip ``duration`` (seconds); outside the keyframes the end values hold.
        """
        if num_frames <= 0:
            raise ValueError(f"num_frames must be positive, got {num_frames}")
        centres = (np.arange(num_frames) + 0.5) / num_frames
        if self.times is None:
            source = (np.arange(self.values.size) + 0.5) / self.values.size
            return np.interp(centres, source, self.values)
        if duration is None or duration <= 0:
            raise ValueError("a curve with times needs the clip duration (seconds) to resample")
        return np.interp(centres * duration, self.times, self.values)
