"""Time-Loudness Module (spec §2.4): a loudness curve -> a small 1-D conv encoder -> added at the UNet input.

Curves ``ℓ`` live in [0, 1] on the latent time grid T' = mel frames / VAE factor (1024 -> 128 real,
256 -> 64 tiny); 0 is -80 dB, 1 is 0 dB. They come from a reference recording (:func:`curve_from_audio`,
the spec's RMS -> dB -> elliptic low-pass -> [0, 1] -> mean-pool recipe in ``fourfold.audio.loudness``) or are
drawn by the user (a list, an array or ``curve.json``), linearly resampled to T'. The curve type is
:class:`fourfold.audio.loudness.LoudnessCurve`.

Encoder (ours): Conv1d(1,64,3)-SiLU-Conv1d(64,64,3)-SiLU-Conv1d(64,C,3), the last layer zero-initialised so
that training starts from the base model; its output (B, C, T') is broadcast over frequency and scaled by
lambda_l. ``inject="conv_in"`` adds it after ``unet.conv_in`` (C = its channels) through a forward hook;
``"latent"`` adds it to the noisy latent (C = latent channels).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import nn

from fourfold.audio.loudness import LoudnessCurve, LoudnessError, loudness_curve
from fourfold.drawaudio.config import DrawAudioConfig

__all__ = [
    "LoudnessCurve",
    "LoudnessError",
    "TLMEncoder",
    "coerce_curve",
    "curve_from_audio",
    "inject_conv_in",
]


def coerce_curve(loudness) -> LoudnessCurve | None:
    """None | LoudnessCurve | path to ``curve.json`` | list/array/tensor of values in [0, 1]."""
    if loudness is None or isinstance(loudness, LoudnessCurve):
        return loudness
    if isinstance(loudness, str | Path):
        return LoudnessCurve.load(loudness)
    if isinstance(loudness, torch.Tensor):
        loudness = loudness.detach().cpu().numpy()
    return LoudnessCurve(np.asarray(loudness, dtype=np.float64))


def curve_from_audio(audio, cfg: DrawAudioConfig, sr: int | None = None) -> LoudnessCurve:
    """ℓ of a waveform (samples,) at ``sr`` or of an audio file, on the config's latent grid T'.

    The clip is cut or zero-padded to the config's window first, so the curve has exactly T' points.
    A silent file is refused by the reader (its curve would be meaningless).
    """
    from fourfold.audio import io as aio

    if isinstance(audio, str | Path):
        audio, sr = aio.load_audio(audio, sr=cfg.mel.sample_rate)
    audio = np.asarray(audio.detach().cpu() if isinstance(audio, torch.Tensor) else audio, dtype=np.float32)
    if sr is not None and sr != cfg.mel.sample_rate:
        audio = aio.resample(audio, sr, cfg.mel.sample_rate)
    n = cfg.num_samples
    audio = np.pad(audio[:n], (0, max(0, n - len(audio))))
    return LoudnessCurve(loudness_curve(torch.from_numpy(audio), cfg.mel, pool=cfg.base.vae_factor).numpy())


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
