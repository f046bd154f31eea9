"""CS-AV: audio-visual cosine similarity (Draw an Audio spec §6) with a pluggable audio-visual embedder.

CS-AV = mean over clips of cos(a_i, v̄_i), where a_i = ``embed_audio`` of clip i's audio (D,) and
v̄_i = the mean over frames of ``embed_frames`` of its video (F, D) -> (D,). The paper does not name its
embedder (ImageBind is the usual choice); any object with the two methods of :class:`AVEmbedder` plugs in.

Since no ImageBind weights can be had here, :class:`TinyCAVP` is our own small contrastive audio-visual
embedder in the spirit of Diff-Foley's CAVP (arXiv 2306.17203): a log-mel CNN and a frame CNN, each giving
per-time features that see their position in the clip, trained so that a clip's pooled audio embedding
matches its pooled frame embedding against the other clips of the batch (InfoNCE). Because positions
enter before pooling, the clip embeddings carry *when* things happen as well as *what* (ours).
:func:`load_av_embedder` reads a local directory (``config.json`` + ``model.safetensors``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from fourfold.nn.modeling import PretrainedModel

__all__ = [
    "AVEmbedder",
    "TinyCAVP",
    "TinyCAVPConfig",
    "csav",
    "csav_from_embeddings",
    "even_frames",
    "load_av_embedder",
]


@runtime_checkable
class AVEmbedder(Protocol):
    """What CS-AV needs from an audio-visual embedder (both outputs in one shared space of width D)."""

    def embed_audio(self, wav: torch.Tensor, sr: int) -> torch.Tensor:
        """(B, samples) float waveforms at ``sr`` Hz -> (B, D)."""
        ...

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, F, H, W, 3) uint8 frames (F sampled evenly over each clip) -> (B, F, D)."""
        ...


def csav_from_embeddings(audio: torch.Tensor | np.ndarray, frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-clip CS-AV: cos(audio (B, D), mean over F of frames (B, F, D)) -> (B,) float64."""
    a = torch.as_tensor(np.asarray(audio), dtype=torch.float64)
    v = torch.as_tensor(np.asarray(frames), dtype=torch.float64)
    if a.ndim != 2 or v.ndim != 3 or a.shape[0] != v.shape[0] or a.shape[1] != v.shape[2]:
        raise ValueError(
            f"CS-AV needs audio (B, D) and frames (B, F, D), got {tuple(a.shape)} and {tuple(v.shape)}"
        )
    return F.cosine_similarity(a, v.mean(dim=1), dim=-1, eps=1e-12).numpy()


def even_frames(video: np.ndarray, n_frames: int) -> np.ndarray:
    """(F_src, H, W, 3) -> (n_frames, H, W, 3): the frames at the centres of ``n_frames`` equal spans."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or len(video) == 0:
        raise ValueError(f"a video must be (frames, H, W, 3), got {video.shape}")
    idx = np.floor((np.arange(n_frames) + 0.5) / n_frames * len(video)).astype(int)
    return video[np.clip(idx, 0, len(video) - 1)]


@torch.no_grad()
def csav(
    embedder: AVEmbedder,
    wavs: list[np.ndarray],
    sr: int,
    videos: list[np.ndarray],
    n_frames: int | None = None,
    batch_size: int = 16,
) -> dict[str, float]:
    """CS-AV of paired clips: ``wavs[i]`` (samples,) at ``sr`` against ``videos[i]`` (F, H, W, 3) uint8.

    Each video is reduced to ``n_frames`` evenly spaced frames (default: the embedder's
    ``config.n_frames``, else 16); clips are embedded in batches of equal shape. Returns ``csav`` (the
    mean over clips), ``csav_std`` and ``csav_clips``.
    """
    if not isinstance(embedder, AVEmbedder):
        raise TypeError(f"{type(embedder).__name__} has no embed_audio(wav, sr) / embed_frames(frames)")
    if len(wavs) != len(videos) or not wavs:
        raise ValueError(f"CS-AV needs paired clips, got {len(wavs)} audios and {len(videos)} videos")
    n_frames = n_frames or getattr(getattr(embedder, "config", None), "n_frames", 16)
    videos = [even_frames(v, n_frames) for v in videos]
    scores: list[float] = []
    i = 0
    while i < len(wavs):  # batches of equal shapes (clips may differ in length)
        j = i + 1
        while j < len(wavs) and j - i < batch_size and np.shape(wavs[j]) == np.shape(wavs[i]) \
                and videos[j].shape == videos[i].shape:  # fmt: skip
            j += 1
        a = embedder.embed_audio(
            torch.from_numpy(np.stack([np.asarray(w, np.float32) for w in wavs[i:j]])), sr
        )
        v = embedder.embed_frames(torch.from_numpy(np.stack(videos[i:j])))
        scores.extend(csav_from_embeddings(a.float().cpu(), v.float().cpu()).tolist())
        i = j
    s = np.asarray(scores)
    return {"csav": float(s.mean()), "csav_std": float(s.std()), "csav_clips": float(len(s))}


# our CAVP-style embedder


@dataclass
class TinyCAVPConfig:
    """Sizes of :class:`TinyCAVP` (ours). Audio: 16 kHz log-mel (n_fft 512, hop 160, 64 bands)."""

    dim: int = 64  # shared embedding width D
    channels: tuple[int, ...] = (16, 32, 64)  # CNN widths (audio and frames alike)
    image_size: int = 32  # frames are resized to this square, pixels
    n_frames: int = 16  # frames sampled evenly over a clip by the caller / the CS-AV CLI
    n_positions: int = 8  # sinusoid pairs for the position within the clip (periods 1 .. 1/8 clip)
    sample_rate: int = 16000  # Hz; other rates are resampled
    n_mels: int = 64
    temperature: float = 0.07  # InfoNCE temperature (CLIP's initial value)

    def __post_init__(self) -> None:
        for name in ("dim", "image_size", "n_frames", "n_positions", "sample_rate", "n_mels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TinyCAVPConfig.{name} must be positive, got {getattr(self, name)}")
        if not self.channels or min(self.channels) <= 0:
            raise ValueError(f"TinyCAVPConfig.channels must be positive widths, got {self.channels}")
        down = 2 ** len(self.channels)
        if self.n_mels % down or self.image_size % down:
            raise ValueError(
                f"TinyCAVPConfig: n_mels and image_size must be multiples of 2**len(channels) = {down}"
            )
        self.channels = tuple(self.channels)


def _positions(n: int, k: int, device) -> torch.Tensor:
    """(n, 2k): sin/cos of 2π j u for j = 1..k at u = (i + 0.5) / n, the position within the clip."""
    u = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n
    ang = 2 * math.pi * u[:, None] * torch.arange(1, k + 1, device=device, dtype=torch.float32)
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


def _cnn(channels: tuple[int, ...], in_ch: int) -> nn.Sequential:
    layers, c = [], in_ch
    for w in channels:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2)]
        c = w
    return nn.Sequential(*layers)


def _head(in_dim: int, dim: int) -> nn.Sequential:
    """Per-time features with their position -> the shared embedding space (a 2-layer MLP)."""
    return nn.Sequential(nn.Linear(in_dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))


class TinyCAVP(PretrainedModel):
    """Contrastive audio-visual embedder (ours, CAVP-style). Per-time features (with their position in the
    clip) -> MLP -> mean over time; frames likewise per frame. ``forward`` is not used: call
    :meth:`embed_audio` / :meth:`embed_frames`, or :meth:`contrastive_loss` to train."""

    config_class = TinyCAVPConfig

    def __init__(self, config: TinyCAVPConfig):
        super().__init__(config)
        c, p = config.channels, 2 * config.n_positions
        self.audio_cnn = _cnn(c, 1)
        self.frame_cnn = _cnn(c, 3)
        # frequency and image position are kept (flattened into channels), not averaged away: pitch tells
        # the timbre, and an object's height in the frame tells when it lands
        down = 2 ** len(c)
        self.audio_flat = nn.Linear(c[-1] * (config.n_mels // down), c[-1])
        self.frame_flat = nn.Linear(c[-1] * (config.image_size // down) ** 2, c[-1])
        self.audio_time = nn.Conv1d(c[-1], c[-1], 5, padding=2)  # local temporal context
        self.frame_time = nn.Conv1d(c[-1], c[-1], 3, padding=1)
        self.audio_head = _head(c[-1] + p, config.dim)
        self.frame_head = _head(c[-1] + p, config.dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.temperature)))
        from fourfold.audio.mel import MelConfig

        self.mel = MelConfig(sample_rate=config.sample_rate, n_fft=512, win_length=512, hop_length=160,
                             n_mels=config.n_mels, f_max=None)  # fmt: skip

    def log_mel(self, wav: torch.Tensor, sr: int) -> torch.Tensor:
        """(B, samples) at ``sr`` -> (B, n_mels, frames) ln-mel at 16 kHz (each clip peak-normalised)."""
        from fourfold.audio.io import resample
        from fourfold.audio.mel import mel_spectrogram

        if wav.ndim != 2:
            raise ValueError(f"embed_audio needs (batch, samples), got {tuple(wav.shape)}")
        if sr != self.config.sample_rate:
            wav = torch.from_numpy(
                np.stack([resample(w, sr, self.config.sample_rate) for w in wav.cpu().numpy()])
            )
        return mel_spectrogram(wav.float().to(self.logit_scale.device), self.mel)

    def mel_features(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) ln-mel -> per-time embeddings (B, T, D), T = frames / 8."""
        h = self.audio_cnn(mel[:, None])  # (B, C, n_mels/8, frames/8)
        h = F.silu(self.audio_flat(rearrange(h, "b c m t -> b t (c m)")))  # (B, T, C)
        h = rearrange(F.silu(self.audio_time(rearrange(h, "b t c -> b c t"))), "b c t -> b t c")
        pos = _positions(h.shape[1], self.config.n_positions, h.device).expand(h.shape[0], -1, -1)
        return self.audio_head(torch.cat([h, pos], dim=-1))

    def embed_audio(self, wav: torch.Tensor, sr: int) -> torch.Tensor:
        """(B, samples) -> (B, D): the mean of the per-time embeddings."""
        return self.mel_features(self.log_mel(wav, sr)).mean(dim=1)

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, F, H, W, 3) uint8 -> (B, F, D), F frames evenly spaced over the clip."""
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"embed_frames needs (batch, frames, H, W, 3), got {tuple(frames.shape)}")
        b, f = frames.shape[:2]
        dev = self.logit_scale.device
        x = rearrange(frames.to(dev).float() / 255.0, "b f h w c -> (b f) c h w")
        s = self.config.image_size
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        h = self.frame_cnn(x * 2 - 1)  # (B·F, C, S/8, S/8)
        h = F.silu(self.frame_flat(rearrange(h, "n c y x -> n (c y x)")))  # (B·F, C)
        h = rearrange(h, "(b f) c -> b c f", b=b)
        h = rearrange(F.silu(self.frame_time(h)), "b c f -> b f c")
        pos = _positions(f, self.config.n_positions, dev).expand(b, -1, -1)
        return self.frame_head(torch.cat([h, pos], dim=-1))

    def contrastive_loss(self, mel: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Symmetric InfoNCE between clip audio embeddings (from :meth:`log_mel` output (B, n_mels, frames))
        and mean-frame embeddings of the same batch (B ≥ 2); the other clips are the negatives."""
        a = F.normalize(self.mel_features(mel).mean(dim=1), dim=-1)
        v = F.normalize(self.embed_frames(frames).mean(dim=1), dim=-1)
        logits = self.logit_scale.exp().clamp(max=100) * a @ v.T
        target = torch.arange(len(a), device=a.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        acc = float((logits.argmax(dim=1) == target).float().mean())
        return loss, {"loss": float(loss.detach()), "retrieval_acc": acc}


def load_av_embedder(path: str | os.PathLike) -> AVEmbedder:
    """Load an audio-visual embedder from a local directory (``config.json`` + ``model.safetensors``).

    Only :class:`TinyCAVP` directories are known; ``from_pretrained`` raises :class:`CheckpointError`
    naming a missing folder or file, or another model type. Other embedders (e.g. an ImageBind wrapper)
    plug into :func:`csav` directly.
    """
    return TinyCAVP.from_pretrained(Path(path)).eval()
