"""Video branch: frame encoders and the video tokens ``c_vid`` (spec §2.2).

Axis legend: B batch, F video frames, P patches per frame (1 when pooled), S streams (2: full, masked),
E encoder feature size, D token width (= the UNet's cross-attention width).

Both the full frames and the masked frames ``x_f * M_f`` (black outside the mask, applied before the
encoder's normalisation) are encoded. Tokens (ours): ``LN(Linear(e)) + stream embedding + sinusoidal time
embedding (+ learned patch position when P > 1)`` -> (B, S·F·P, D).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from einops import rearrange, repeat
from torch import nn
from torch.nn import functional as F

from fourfold.drawaudio.config import DrawAudioConfig, VideoConfig

__all__ = ["ClipFrameEncoder", "TinyFrameCNN", "VideoTokenizer", "build_frame_encoder", "frames_to_tensor"]

# CLIP's published normalisation (OpenAI), used when the local directory has no preprocessor_config.json
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def frames_to_tensor(frames, size: int) -> torch.Tensor:
    """uint8 (B, F, H, W, 3) or (F, H, W, 3) -> float (B, F, 3, size, size) in [0, 1] (bilinear resize)."""
    x = torch.as_tensor(frames)
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"frames must be (B, F, H, W, 3) or (F, H, W, 3) uint8, got {tuple(x.shape)}")
    b = x.shape[0]
    x = rearrange(x.float() / 255.0, "b f h w c -> (b f) c h w")
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return rearrange(x, "(b f) c h w -> b f c h w", b=b).clamp(0, 1)


class TinyFrameCNN(nn.Module):
    """Trainable patch-local frame encoder for the tiny config.

    A ``patch_size`` x ``patch_size`` stride-``patch_size`` convolution (position-aware inside the patch)
    and a 1x1 convolution give per-patch features, so a patch's feature depends only on its own pixels:
    the property MAM's ``tokens`` mode relies on. ``(N, 3, S, S)`` in [0, 1] ->
    ``(N, P, E)`` per patch (``pooled=False``) or ``(N, 1, E)`` from all patches flattened (``pooled=True``,
    which keeps where in the frame things are, e.g. an object touching the floor).
    """

    def __init__(self, cfg: VideoConfig):
        super().__init__()
        self.patch, w = cfg.patch_size, cfg.width
        grid = cfg.image_size // cfg.patch_size
        self.net = nn.Sequential(
            nn.Conv2d(3, w, cfg.patch_size, stride=cfg.patch_size),
            nn.SiLU(),
            nn.Conv2d(w, w, 1),
            nn.SiLU(),
        )
        self.patch_head = nn.Linear(w, cfg.embed_dim)
        self.frame_head = nn.Linear(w * grid * grid, cfg.embed_dim)
        self.out_dim = cfg.embed_dim
        self.pooled = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - 0.5) / 0.25  # normalise after masking: black stays a fixed value
        h = rearrange(self.net(x), "n c gy gx -> n (gy gx) c")
        if self.pooled:
            return self.frame_head(h.flatten(1))[:, None]
        return self.patch_head(h)


class ClipFrameEncoder(nn.Module):
    """Frozen ``CLIPVisionModelWithProjection`` from a local directory (paper config).

    ``(N, 3, S, S)`` in [0, 1] -> pooled ``(N, 1, proj)`` (``image_embeds``) or, with ``patches=True``,
    ``(N, P, proj)``: every patch token through ``post_layernorm`` and ``visual_projection``.
    """

    def __init__(self, path: str | Path):
        super().__init__()
        from transformers import CLIPVisionModelWithProjection

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"CLIP vision encoder directory {path} has no config.json")
        self.model = CLIPVisionModelWithProjection.from_pretrained(str(path), dtype=torch.float32).eval()
        self.model.requires_grad_(False)
        mean, std = CLIP_MEAN, CLIP_STD
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            data = json.loads(pre.read_text())
            mean, std = tuple(data.get("image_mean", mean)), tuple(data.get("image_std", std))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.out_dim = self.model.config.projection_dim
        self.image_size = (
            self.model.config.vision_config.image_size
            if hasattr(self.model.config, "vision_config")
            else self.model.config.image_size
        )
        self.patches = False

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        out = self.model(pixel_values=x.to(self.model.dtype))
        if not self.patches:
            return out.image_embeds[:, None].float()
        tokens = self.model.vision_model.post_layernorm(out.last_hidden_state[:, 1:])
        return self.model.visual_projection(tokens).float()


def build_frame_encoder(cfg: DrawAudioConfig) -> nn.Module:
    """TinyFrameCNN (trainable) or the frozen CLIP encoder from ``cfg.video.clip_path``."""
    if cfg.video.encoder == "tiny":
        enc = TinyFrameCNN(cfg.video)
        enc.pooled = cfg.mam.mode == "pixels"
        return enc
    if not cfg.video.clip_path:
        raise ValueError("video.clip_path must name a local CLIP vision directory for video.encoder='clip'")
    enc = ClipFrameEncoder(cfg.video.clip_path)
    enc.patches = cfg.mam.mode in ("tokens", "both")
    return enc


def sinusoidal(t: torch.Tensor, dim: int, max_period: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding of times in seconds (scaled x100, 10-ms resolution): (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = (t.float() * 100.0)[..., None] * freqs
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(emb, (0, dim - 2 * half))


class VideoTokenizer(nn.Module):
    """Trainable projection of frame features into video tokens (ours).

    ``feats`` (B, S, F, P, E), ``times`` (F,) seconds -> tokens (B, S·F·P, D).
    """

    def __init__(self, in_dim: int, dim: int, max_patches: int = 256):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.stream = nn.Parameter(torch.randn(2, dim) * 0.02)  # full, masked
        self.patch_pos = nn.Parameter(torch.zeros(max_patches, dim))
        self.dim = dim

    def forward(self, feats: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        _b, s, _f, p, _ = feats.shape
        if p > self.patch_pos.shape[0]:
            raise ValueError(
                f"{p} patches per frame exceed the patch-position table ({self.patch_pos.shape[0]})"
            )
        x = self.norm(self.proj(feats))
        x = x + self.stream[:s, None, None, :] + sinusoidal(times, self.dim)[None, None, :, None, :]
        if p > 1:
            x = x + self.patch_pos[:p]
        return rearrange(x, "b s f p d -> b (s f p) d")


def patch_keep_mask(masks: torch.Tensor, patch: int, keep_fraction: float) -> torch.Tensor:
    """Per-pixel masks (B, F, S, S) in [0, 1] -> (B, F, P) bool: patch kept iff coverage >= keep_fraction."""
    b = masks.shape[0]
    cover = F.avg_pool2d(rearrange(masks.float(), "b f h w -> (b f) 1 h w"), patch)
    return rearrange(cover >= keep_fraction - 1e-6, "(b f) 1 gy gx -> b f (gy gx)", b=b)


def expand_streams(key_mask: torch.Tensor, streams: int = 2) -> torch.Tensor:
    """(B, F, P) -> (B, S·F·P), matching :class:`VideoTokenizer`'s token order."""
    return rearrange(repeat(key_mask, "b f p -> b s f p", s=streams), "b s f p -> b (s f p)")
