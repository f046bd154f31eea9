"""Log-mel spectrograms in torch, their image form for latent diffusion, and Griffin-Lim inversion.

Framing (shared by every preset, Auffusion/HiFi-GAN style): the waveform is reflect-padded by
``(n_fft - hop) / 2`` on each side and cut into frames with ``center=False``, so ``N`` samples give
exactly ``floor(N / hop)`` frames and frame ``k`` is centred on sample ``hop·k + hop/2``
(163840 samples at hop 160 -> 1024 frames). The Hann window of ``win_length`` sits zero-padded in the
middle of the ``n_fft`` frame.

Steps of :func:`mel_spectrogram` (Draw an Audio spec §2.1, after Auffusion):
1. optional DC removal and peak normalisation to ``peak_norm`` (0.95);
2. reflect-pad ``(n_fft - hop)/2`` each side;
3. STFT, ``center=False``;
4. magnitude ``sqrt(re² + im² + 1e-9)`` (raised to ``power``);
5. Slaney mel filter bank (librosa's default ``htk=False, norm="slaney"``), built once and cached;
6. ``ln(max(x, 1e-5))`` (or ``ln(x + 1e-5)`` with ``log_mode="add"``).

Shapes: waveforms ``(samples,)`` or ``(batch, samples)``; mels ``(n_mels, frames)`` or
``(batch, n_mels, frames)``; images ``(batch, channels, n_mels, frames)`` in [-1, 1], low
frequencies at the bottom row (as a picture is drawn).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from einops import repeat
from torch import nn
from torch.nn import functional as F

__all__ = [
    "MelConfig",
    "MelSpectrogram",
    "griffin_lim",
    "image_to_mel",
    "istft",
    "linear_spectrogram",
    "mel_filters",
    "mel_spectrogram",
    "mel_to_image",
    "mel_to_linear",
    "normalize_waveform",
    "pad_for_frames",
    "stft",
]


@dataclass(frozen=True)
class MelConfig:
    """Mel front end. Every field is a plain number so the config round-trips through JSON."""

    sample_rate: int = 16000  # Hz
    n_fft: int = 2048  # FFT size (samples)
    win_length: int = 1024  # Hann window length (samples), zero-padded to n_fft in the frame's middle
    hop_length: int = 160  # frame step (samples); frames = floor(samples / hop_length)
    n_mels: int = 256  # mel bands
    f_min: float = 0.0  # lowest mel band edge (Hz)
    f_max: float | None = 8000.0  # highest mel band edge (Hz); None = Nyquist
    power: float = 1.0  # 1 = magnitude mel, 2 = power mel
    mag_eps: float = 1e-9  # magnitude = sqrt(re² + im² + mag_eps) (HiFi-GAN / Auffusion)
    log_floor: float = 1e-5  # ln(max(x, floor)) for log_mode "clamp", ln(x + floor) for "add"
    log_mode: str = "clamp"
    peak_norm: float | None = 0.95  # scale each clip to this peak before the STFT; None = leave as is
    remove_dc: bool = False  # subtract each clip's mean first (AudioLDM)
    image_max: float = 200.0  # image normalisation maps [ln floor, ln image_max] to [0, 1] (Auffusion)

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"MelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.win_length > self.n_fft:
            raise ValueError(f"MelConfig.win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if self.hop_length > self.n_fft:
            raise ValueError(f"MelConfig.hop_length ({self.hop_length}) must be <= n_fft ({self.n_fft})")
        if self.log_mode not in ("clamp", "add"):
            raise ValueError(f"MelConfig.log_mode must be 'clamp' or 'add', got {self.log_mode!r}")
        if self.power <= 0:
            raise ValueError(f"MelConfig.power must be positive, got {self.power}")
        if self.log_floor <= 0:
            raise ValueError(f"MelConfig.log_floor must be positive, got {self.log_floor}")
        if self.image_max <= self.log_floor:
            raise ValueError(
                f"MelConfig.image_max ({self.image_max}) must exceed log_floor ({self.log_floor})"
            )
        fmax = self.sample_rate / 2 if self.f_max is None else self.f_max
        if not 0 <= self.f_min < fmax <= self.sample_rate / 2:
            raise ValueError(
                f"MelConfig.f_min/f_max must satisfy 0 <= f_min < f_max <= sample_rate/2, got {self.f_min}, {fmax}"
            )
        if self.peak_norm is not None and not 0 < self.peak_norm <= 1:
            raise ValueError(f"MelConfig.peak_norm must be in (0, 1] or None, got {self.peak_norm}")

    # presets

    @classmethod
    def auffusion(cls) -> MelConfig:
        """Auffusion / Draw an Audio (spec §2.1): 16 kHz, n_fft 2048, Hann 1024, hop 160, 256 mels 0-8 kHz."""
        return cls()

    @classmethod
    def audioldm(cls) -> MelConfig:
        """AudioLDM: 16 kHz, n_fft 1024, win 1024, hop 160, 64 mels 0-8 kHz; waveform minus mean, peak 0.5
        (AudioLDM's ``normalize_wav``)."""
        return cls(n_fft=1024, win_length=1024, n_mels=64, peak_norm=0.5, remove_dc=True)

    @classmethod
    def bestrq(cls) -> MelConfig:
        """SongCreator's BEST-RQ features (App A.2): 24 kHz, 80 mels, hop 480 (50 Hz).

        Ours (the paper leaves them open): window 1920, n_fft 2048, power mel, ``ln(mel + 1e-5)``, no peak
        normalisation (BEST-RQ normalises each bin globally afterwards), bands up to Nyquist.
        """
        return cls(
            sample_rate=24000,
            n_fft=2048,
            win_length=1920,
            hop_length=480,
            n_mels=80,
            f_max=None,
            power=2.0,
            log_mode="add",
            peak_norm=None,
        )

    @classmethod
    def tiny(cls) -> MelConfig:
        """Draw an Audio's CPU scale (spec §4): 16 kHz, n_fft 512, win 512, hop 160, 64 mels 0-8 kHz."""
        return cls(n_fft=512, win_length=512, n_mels=64)

    def replace(self, **changes) -> MelConfig:
        return dataclasses.replace(self, **changes)

    # derived quantities

    @property
    def pad_left(self) -> int:
        return (self.n_fft - self.hop_length) // 2

    @property
    def pad_right(self) -> int:
        return self.n_fft - self.hop_length - self.pad_left

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def fmax(self) -> float:
        return self.sample_rate / 2 if self.f_max is None else float(self.f_max)

    @property
    def log_min(self) -> float:
        """ln of the floor: the value of silence."""
        return math.log(self.log_floor)

    @property
    def log_max(self) -> float:
        return math.log(self.image_max)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Frames produced from ``num_samples`` samples: ``floor(num_samples / hop)``."""
        return num_samples // self.hop_length

    def num_samples(self, num_frames: int) -> int:
        """Samples a vocoder returns for ``num_frames`` frames: ``num_frames · hop``."""
        return num_frames * self.hop_length


# filters


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    """Slaney's Auditory Toolbox scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(
        f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp
    )


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=32)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Slaney-normalised triangular mel filters ``(n_mels, n_fft // 2 + 1)`` float32.

    Same definition as ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm="slaney")``:
    band edges equally spaced on the Slaney mel scale, each triangle scaled by ``2 / (f_{i+2} - f_i)`` so
    every band has unit area. Cached: a config's filters are built once per process.
    """
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(f_min), _hz_to_mel_slaney(f_max), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights = weights.astype(np.float32)
    weights.flags.writeable = False  # shared through the cache
    return weights


_TORCH_CACHE: dict[tuple, torch.Tensor] = {}


def _cached(kind: str, cfg: MelConfig, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Filters / pseudo-inverse / window per (config, device, dtype), keyed on all three."""
    key = (
        kind,
        cfg.sample_rate,
        cfg.n_fft,
        cfg.win_length,
        cfg.n_mels,
        cfg.f_min,
        cfg.fmax,
        str(device),
        dtype,
    )
    if key not in _TORCH_CACHE:
        if kind == "window":  # Hann(win_length), zero-padded to n_fft in the middle (as torch.stft does)
            w = torch.zeros(cfg.n_fft, dtype=torch.float64)
            left = (cfg.n_fft - cfg.win_length) // 2
            w[left : left + cfg.win_length] = torch.hann_window(
                cfg.win_length, periodic=True, dtype=torch.float64
            )
            value = w
        else:
            fb = torch.from_numpy(
                mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, float(cfg.f_min), cfg.fmax).copy()
            )
            value = fb if kind == "mel" else torch.linalg.pinv(fb.double())  # (n_freqs, n_mels)
        _TORCH_CACHE[key] = value.to(device=device, dtype=dtype)
    return _TORCH_CACHE[key]


# waveform -> spectrogram


def _as_batch(wav) -> tuple[torch.Tensor, bool]:
    wav = torch.as_tensor(wav)
    if wav.ndim == 1:
        return wav[None], True
    if wav.ndim == 2:
        return wav, False
    raise ValueError(f"expected a waveform (samples,) or (batch, samples), got shape {tuple(wav.shape)}")


def normalize_waveform(wav: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Step 1: ``(batch, samples)`` -> DC removal (if set) and peak normalisation per clip.

    A silent clip stays zero instead of dividing by zero.
    """
    if cfg.remove_dc:
        wav = wav - wav.mean(dim=-1, keepdim=True)
    if cfg.peak_norm is not None:
        peak = wav.abs().amax(dim=-1, keepdim=True)
        wav = torch.where(peak > 0, wav / peak.clamp_min(1e-12) * cfg.peak_norm, wav)
    return wav


def pad_for_frames(wav: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Step 2: reflect-pad ``(batch, samples)`` by ``(n_fft - hop)/2`` each side (HiFi-GAN framing)."""
    if wav.shape[-1] < cfg.hop_length or wav.shape[-1] <= max(cfg.pad_left, cfg.pad_right):
        raise ValueError(
            f"waveform of {wav.shape[-1]} samples is too short for this mel config "
            f"(needs > {max(cfg.pad_left, cfg.pad_right, cfg.hop_length - 1)} samples for reflect padding)"
        )
    return F.pad(wav[:, None], (cfg.pad_left, cfg.pad_right), mode="reflect")[:, 0]


def stft(padded: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Step 3: complex STFT of an already padded ``(batch, samples')`` -> ``(batch, n_freqs, frames)``."""
    window = _cached("window", cfg, padded.device, padded.dtype)
    return torch.stft(
        padded,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.n_fft,
        window=window,
        center=False,
        return_complex=True,
    )


def _overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """Sum frames ``(batch, n, T)`` placed every ``hop`` samples -> ``(batch, (T - 1)·hop + n)``."""
    n, count = frames.shape[1:]
    length = (count - 1) * hop + n
    return F.fold(frames, output_size=(1, length), kernel_size=(1, n), stride=(1, hop))[:, 0, 0]


def _overlap_envelope(
    cfg: MelConfig, num_frames: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Σ_k window²(n − k·hop): the normaliser of weighted overlap-add, ``((frames - 1)·hop + n_fft,)``."""
    window_sq = _cached("window", cfg, device, dtype).square()
    return _overlap_add(repeat(window_sq, "n -> 1 n t", t=num_frames), cfg.hop_length)[0]


def istft(spec: torch.Tensor, cfg: MelConfig, envelope: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted overlap-add inverse of :func:`stft` in the padded domain.

    ``(batch, n_freqs, frames)`` complex -> ``(batch, (frames - 1)·hop + n_fft)``. Written with ``fold``
    because ``torch.istft(center=False)`` rejects windows whose envelope is zero at the edges.
    ``envelope`` (from :func:`_overlap_envelope`) may be passed in to reuse it across calls.
    """
    window = _cached("window", cfg, spec.device, spec.real.dtype)
    frames = torch.fft.irfft(spec, n=cfg.n_fft, dim=1) * window[None, :, None]  # (b, n_fft, t)
    signal = _overlap_add(frames, cfg.hop_length)
    if envelope is None:
        envelope = _overlap_envelope(cfg, spec.shape[-1], spec.device, signal.dtype)
    return torch.where(envelope > 1e-8, signal / envelope.clamp_min(1e-8), torch.zeros_like(signal))


def linear_spectrogram(wav, cfg: MelConfig) -> torch.Tensor:
    """Steps 1-4: waveform ``(samples,)|(batch, samples)`` -> magnitude**power ``(batch?, n_freqs, frames)``."""
    batch, squeeze = _as_batch(wav)
    batch = normalize_waveform(batch.float(), cfg)
    spec = stft(pad_for_frames(batch, cfg), cfg)
    mag = torch.sqrt(spec.real.square() + spec.imag.square() + cfg.mag_eps)
    if cfg.power != 1.0:
        mag = mag.pow(cfg.power)
    return mag[0] if squeeze else mag


def mel_spectrogram(wav, cfg: MelConfig) -> torch.Tensor:
    """Log-mel, steps 1-6: ``(samples,)`` -> ``(n_mels, frames)``; ``(batch, samples)`` -> ``(batch, n_mels, frames)``.

    ``frames = floor(samples / hop)``. Values are natural logs; silence sits at ``cfg.log_min``.
    """
    mag = linear_spectrogram(wav, cfg)
    fb = _cached("mel", cfg, mag.device, mag.dtype)
    mel = torch.einsum("mf,...ft->...mt", fb, mag)
    if cfg.log_mode == "clamp":
        return torch.log(mel.clamp_min(cfg.log_floor))
    return torch.log(mel + cfg.log_floor)


class MelSpectrogram(nn.Module):
    """``nn.Module`` face of :func:`mel_spectrogram` (no parameters): ``(batch, samples) -> (batch, n_mels, frames)``."""

    def __init__(self, cfg: MelConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return mel_spectrogram(wav, self.cfg)


# mel <-> image (Auffusion's normalisation, spec §2.1 step 7)


def mel_to_image(mel: torch.Tensor, cfg: MelConfig, channels: int = 3, return_clipped: bool = False):
    """Log-mel ``(batch, n_mels, frames)`` (or unbatched) -> image ``(batch, channels, n_mels, frames)`` in [-1, 1].

    ``clamp((x - ln floor) / (ln image_max - ln floor), 0, 1)``, repeated to ``channels``, frequency
    flipped (low bands at the bottom), then ``·2 - 1``. With ``return_clipped`` also returns how many
    values fell outside the range (Auffusion silently clamps them; we count).
    """
    mel = mel[None] if mel.ndim == 2 else mel
    if mel.ndim != 3:
        raise ValueError(f"expected a mel (batch, n_mels, frames), got shape {tuple(mel.shape)}")
    unit = (mel - cfg.log_min) / (cfg.log_max - cfg.log_min)
    clipped = int(((unit < 0) | (unit > 1)).sum())
    image = repeat(unit.clamp(0.0, 1.0).flip(1), "b m t -> b c m t", c=channels) * 2.0 - 1.0
    return (image, clipped) if return_clipped else image


def image_to_mel(image: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Inverse of :func:`mel_to_image`: ``(batch, channels, n_mels, frames)`` -> ``(batch, n_mels, frames)``.

    Channels are averaged (a decoded image's channels differ slightly); values are clamped to [-1, 1].
    """
    if image.ndim != 4:
        raise ValueError(
            f"expected an image (batch, channels, n_mels, frames), got shape {tuple(image.shape)}"
        )
    unit = (image.clamp(-1.0, 1.0).mean(dim=1) + 1.0) / 2.0
    return unit.flip(1) * (cfg.log_max - cfg.log_min) + cfg.log_min


# mel -> waveform (the always-available vocoder)


def mel_to_linear(mel: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Log-mel ``(batch, n_mels, frames)`` -> magnitude ``(batch, n_freqs, frames)`` by the clamped pseudo-inverse."""
    energy = mel.exp() if cfg.log_mode == "clamp" else (mel.exp() - cfg.log_floor).clamp_min(0.0)
    pinv = _cached("pinv", cfg, mel.device, mel.dtype)
    linear = torch.einsum("fm,...mt->...ft", pinv, energy).clamp_min(0.0)
    return linear.pow(1.0 / cfg.power) if cfg.power != 1.0 else linear


@torch.no_grad()
def griffin_lim(
    mel: torch.Tensor,
    cfg: MelConfig,
    n_iter: int = 32,
    momentum: float = 0.99,
    length: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Invert a log-mel with fast Griffin-Lim (Perraudin et al. 2013), the default vocoder.

    ``mel``: ``(n_mels, frames)`` or ``(batch, n_mels, frames)`` -> waveform ``(samples,)`` or
    ``(batch, samples)`` with ``samples = frames · hop`` (or ``length``, zero-padded/cut). Phases start
    random from ``seed``; each iteration projects through ISTFT/STFT in the padded (non-centred) frame
    domain, then the reflect padding is cut off. 32 iterations, momentum 0.99 (ours, as torchaudio).
    The output is at the normalised level (the peak normalisation is not undone).
    """
    squeeze = mel.ndim == 2
    mel = mel[None] if squeeze else mel
    if mel.ndim != 3 or mel.shape[1] != cfg.n_mels:
        raise ValueError(f"expected a mel (batch, {cfg.n_mels}, frames), got shape {tuple(mel.shape)}")
    if n_iter < 0 or not 0 <= momentum < 1:
        raise ValueError(f"griffin_lim needs n_iter >= 0 and 0 <= momentum < 1, got {n_iter}, {momentum}")
    magnitude = mel_to_linear(mel.float(), cfg)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    phase = torch.rand(magnitude.shape, generator=gen).to(magnitude.device) * (2 * math.pi)
    angles = torch.polar(torch.ones_like(magnitude), phase)
    previous = torch.zeros_like(angles)
    envelope = _overlap_envelope(cfg, magnitude.shape[-1], magnitude.device, magnitude.dtype)
    for _ in range(n_iter):
        rebuilt = stft(istft(magnitude * angles, cfg, envelope), cfg)
        angles = rebuilt - previous * (momentum / (1.0 + momentum))
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    signal = istft(magnitude * angles, cfg, envelope)
    frames = mel.shape[-1]
    wav = signal[:, cfg.pad_left : cfg.pad_left + frames * cfg.hop_length]
    if length is not None:
        wav = F.pad(wav, (0, max(0, length - wav.shape[-1])))[:, :length]
    return wav[0] if squeeze else wav
