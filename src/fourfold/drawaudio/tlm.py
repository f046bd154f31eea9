"""Time-Loudness Module (spec §2.4): a loudness curve -> a small 1-D conv encoder -> added at the UNet input.

Curves ``ℓ`` live in [0, 1] on the latent time grid T' = mel frames / VAE factor (1024 -> 128 real,
256 -> 64 tiny); 0 is -80 dB, 1 is 0 dB. They come from a reference recording (:meth:`LoudnessCurve.from_audio`,
the spec's RMS -> dB -> elliptic low-pass -> [0, 1] -> mean-pool recipe in ``fourfold.audio.loudness``) or are
drawn by the user (a list, an array or ``curve.json``), linearly resampled to T'.

Encoder (ours): Conv1d(1,64,3)-SiLU-Conv1d(64,64,3)-SiLU-Conv1d(64,C,3), the last layer zero-initialised so
that training starts from the base model; its output (B, C, T') is broadcast over frequency and scaled by
lambda_l. ``inject="conv_in"`` adds it after ``unet.conv_in`` (C = its channels) through a forward hook;
``"latent"`` adds it to the noisy latent (C = latent channels).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import nn

from fourfold.drawaudio.config import DrawAudioConfig

__all__ = ["LoudnessCurve", "LoudnessError", "TLMEncoder", "inject_conv_in", "resample_curve"]


class LoudnessError(ValueError):
    """A loudness curve is malformed (NaN, outside [0, 1], empty, unreadable file)."""


def resample_curve(values, length: int) -> np.ndarray:
    """Linear resample of a 1-D curve to ``length`` points (ends kept)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(v) == 1:
        return np.full(length, v[0])
    return np.interp(np.linspace(0, len(v) - 1, length), np.arange(len(v)), v)


class LoudnessCurve:
    """A curve ``values`` in [0, 1] over the clip (any number of points; resampled on use)."""

    def __init__(self, values, times=None, source: str = "curve"):
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.size == 0:
            raise LoudnessError(f"{source}: the loudness curve is empty")
        if not np.isfinite(v).all():
            raise LoudnessError(f"{source}: the loudness curve contains NaN or infinite values")
        if v.min() < 0 or v.max() > 1:
            raise LoudnessError(
                f"{source}: loudness values must lie in [0, 1], got [{v.min():.3g}, {v.max():.3g}]"
            )
        if times is not None:
            t = np.asarray(times, dtype=np.float64).reshape(-1)
            if t.shape != v.shape or not np.all(np.diff(t) > 0):
                raise LoudnessError(f"{source}: 't' must be increasing and as long as 'value'")
            self.times = t
        else:
            self.times = None
        self.values, self.source = v, source

    @classmethod
    def from_json(cls, path: str | Path) -> LoudnessCurve:
        """``{"t": [...], "value": [...]}`` (seconds) or a plain list of values spread over the clip."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise LoudnessError(f"cannot read loudness file {path}: {err}") from err
        if isinstance(data, list):
            return cls(data, source=str(path))
        if isinstance(data, dict) and "value" in data:
            return cls(data["value"], data.get("t"), source=str(path))
        raise LoudnessError(f"{path}: expected a list or {{'t': [...], 'value': [...]}}")

    @classmethod
    def from_audio(cls, audio, cfg: DrawAudioConfig, sr: int | None = None) -> LoudnessCurve:
        """Extract ℓ from a waveform (samples,) or a file path, on the config's latent grid T'."""
        from fourfold.audio import io as aio
        from fourfold.audio.loudness import loudness_curve

        if isinstance(audio, str | Path):
            audio, sr = aio.load_audio(audio, sr=cfg.mel.sample_rate)
        elif sr is not None and sr != cfg.mel.sample_rate:
            audio = aio.resample(np.asarray(audio, dtype=np.float32), sr, cfg.mel.sample_rate)
        audio = np.asarray(audio, dtype=np.float32)
        n = cfg.num_samples
        audio = np.pad(audio[:n], (0, max(0, n - len(audio))))
        curve = loudness_curve(torch.from_numpy(audio), cfg.mel, pool=cfg.base.vae_factor)
        return cls(np.asarray(curve, dtype=np.float64).reshape(-1), source="audio")

    @classmethod
    def coerce(cls, loudness) -> LoudnessCurve | None:
        """None | LoudnessCurve | path to curve.json | list/array of values."""
        if loudness is None or isinstance(loudness, LoudnessCurve):
            return loudness
        if isinstance(loudness, str | Path):
            return cls.from_json(loudness)
        if isinstance(loudness, torch.Tensor):
            loudness = loudness.detach().cpu().numpy()
        return cls(loudness)

    def on_grid(self, length: int, duration: float) -> np.ndarray:
        """Values at the ``length`` latent frames of a ``duration``-second clip (frame centres)."""
        if self.times is None:
            return resample_curve(self.values, length)
        centres = (np.arange(length) + 0.5) * duration / length
        return np.interp(centres, self.times, self.values)

    def shifted(self, frames: int) -> LoudnessCurve:
        """The curve moved right by ``frames`` of its own samples (edge values repeat)."""
        v = np.roll(self.values, frames)
        if frames > 0:
            v[:frames] = self.values[0]
        elif frames < 0:
            v[frames:] = self.values[-1]
        return LoudnessCurve(v, source=self.source)


class TLMEncoder(nn.Module):
    """``curve`` (B, T') in [0, 1] -> (B, C, 1, T'), broadcast over frequency by the caller's addition."""

    def __init__(self, out_channels: int, hidden: int = 64, kernel_size: int = 3, scale: float = 1.0):
        super().__init__()
        pad = kernel_size // 2
        self.net = nn.Sequential(
            nn.Conv1d(1, hidden, kernel_size, padding=pad),
            nn.SiLU(),
            nn.Conv1d(hidden, hidden, kernel_size, padding=pad),
            nn.SiLU(),
            nn.Conv1d(hidden, out_channels, kernel_size, padding=pad),
        )
        nn.init.zeros_(self.net[-1].weight)  # zero-init: the base model is unchanged at the start
        nn.init.zeros_(self.net[-1].bias)
        self.scale = scale

    def forward(self, curve: torch.Tensor) -> torch.Tensor:
        out = self.net(rearrange(curve.float(), "b t -> b 1 t"))
        return self.scale * rearrange(out, "b c t -> b c 1 t")


@contextlib.contextmanager
def inject_conv_in(unet: nn.Module, residual: torch.Tensor | None) -> Iterator[None]:
    """Within the block, ``unet.conv_in``'s output gets ``residual`` (B, C, 1, T') added (if not None)."""
    if residual is None:
        yield
        return

    def hook(_module, _inputs, output):
        if output.shape[0] != residual.shape[0] or output.shape[-1] != residual.shape[-1]:
            raise ValueError(
                f"TLM residual {tuple(residual.shape)} does not fit conv_in output {tuple(output.shape)}"
            )
        return output + residual.to(output.dtype)

    handle = unet.conv_in.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
