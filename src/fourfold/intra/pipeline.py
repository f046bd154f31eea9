"""``IntraGrounder``: image + interaction text -> heatmap (INTRA inference, §3.1), evaluation and overlays.

Inference: square resize to the model size -> forward with the plain text -> M (h, w) -> bilinear upsample
(align_corners=False) to the input image size. Any text is allowed, seen or not.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fourfold.data.agd20k import EgoItem, label_text, load_gt
from fourfold.intra.dataset import load_image, to_tensor
from fourfold.intra.model import IntraModel
from fourfold.metrics.saliency import SaliencyScores, saliency_scores

__all__ = [
    "IntraGrounder",
    "centre_prior",
    "centre_prior_predict",
    "evaluate_items",
    "overlay",
    "part_hit_rates",
    "save_heatmap_png",
]

CENTRE_PRIOR_SIGMA = 0.25  # centre-prior baseline: isotropic Gaussian, σ = 0.25 · side


def overlay(image, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """Blend a heatmap (H', W') in [0,1] over the image with a colour map (LOCATE-style jet)."""
    base = load_image(image)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != (base.height, base.width):
        t = torch.from_numpy(heat)[None, None]
        heat = F.interpolate(t, size=(base.height, base.width), mode="bilinear", align_corners=False)[
            0, 0
        ].numpy()
    rgb = matplotlib.colormaps[cmap](np.clip(heat, 0, 1))[..., :3] * 255.0
    out = (1 - alpha) * np.asarray(base, dtype=np.float32) + alpha * rgb
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def centre_prior(height: int, width: int, sigma: float = CENTRE_PRIOR_SIGMA) -> np.ndarray:
    """(H, W) isotropic Gaussian centred on the image, σ = ``sigma`` × side, max 1 (the baseline)."""
    side = max(height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    d2 = (yy - (height - 1) / 2) ** 2 + (xx - (width - 1) / 2) ** 2
    return np.exp(-d2 / (2 * (sigma * side) ** 2)).astype(np.float32)


class IntraGrounder:
    """Ground interaction texts on object images with a trained :class:`IntraModel`.

    >>> g = IntraGrounder.from_pretrained("runs/intra", image_encoder="models/dinov2-base", text_encoder="models/albef-text")
    >>> heat = g("mug.jpg", "drink with")          # (H, W) float32 in [0, 1]
    >>> heats = g.ground_many("mug.jpg", ["hold", "sip"])  # (2, H, W)
    """

    def __init__(self, model: IntraModel, device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.size = model.config.image_size

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        *,
        image_encoder: str | None = None,
        text_encoder: str | None = None,
        device: str = "cpu",
    ) -> IntraGrounder:
        overrides = {}
        if image_encoder is not None:
            overrides["image_encoder"] = str(image_encoder)
        if text_encoder is not None:
            overrides["text_encoder"] = str(text_encoder)
        return cls(IntraModel.from_pretrained(directory, **overrides), device)

    @torch.no_grad()
    def ground_batch(self, images: Sequence, texts: Sequence[str]) -> list[np.ndarray]:
        """One text per image; returns a list of (H_i, W_i) float32 maps at each input's size."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        pil = [load_image(im) for im in images]
        x = torch.stack([to_tensor(im, self.size) for im in pil]).to(self.device)
        heat = self.model(x, texts=[label_text(t) if "_" in t else t for t in texts]).heatmap  # (B, h, w)
        out = []
        for m, im in zip(heat, pil, strict=True):
            up = F.interpolate(
                m[None, None], size=(im.height, im.width), mode="bilinear", align_corners=False
            )
            out.append(up[0, 0].clamp(0, 1).float().cpu().numpy())
        return out

    def __call__(self, image, text: str) -> np.ndarray:
        """(H, W) float32 heatmap in [0, 1] at the input image's size."""
        return self.ground_batch([image], [text])[0]

    def ground_many(self, image, texts: Sequence[str]) -> np.ndarray:
        """(K, H, W): one map per text for one image."""
        pil = load_image(image)
        return np.stack(self.ground_batch([pil] * len(texts), list(texts)))

    overlay = staticmethod(overlay)


def evaluate_items(
    items: Sequence[EgoItem],
    predict,
    *,
    batch_size: int = 32,
) -> SaliencyScores:
    """Score ``predict(images: list[PIL], affordances: list[str]) -> list[(H, W) maps]`` on test items as
    LOCATE does (224×224, KLD/SIM/NSS), with per-affordance and per-object means."""
    preds, gts = [], []
    for lo in range(0, len(items), batch_size):
        chunk = items[lo : lo + batch_size]
        images = [load_image(it.path) for it in chunk]
        preds += list(predict(images, [it.affordance for it in chunk]))
        gts += [load_gt(it.gt_path, binary=it.binary_gt) for it in chunk]
    groups = {"affordance": [it.affordance for it in items], "object": [it.obj for it in items]}
    return saliency_scores(preds, gts, groups=groups)


def part_hit_rates(items: Sequence[EgoItem], predict, *, batch_size: int = 32) -> dict[str, float]:
    """Text-correct part selection: the share of test items whose map argmax lies on the GT part
    (GT > 0.5 · its max), overall and per ``object:affordance``. ``predict`` as in :func:`evaluate_items`."""
    hits: dict[str, list[bool]] = {}
    for lo in range(0, len(items), batch_size):
        chunk = items[lo : lo + batch_size]
        maps = predict([load_image(it.path) for it in chunk], [it.affordance for it in chunk])
        for it, heat in zip(chunk, maps, strict=True):
            gt = load_gt(it.gt_path, binary=it.binary_gt)
            heat = np.asarray(heat)
            if heat.shape != gt.shape:
                raise ValueError(f"{it.path}: map {heat.shape} vs GT {gt.shape}")
            y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
            hit = bool(gt[y, x] > 0.5 * gt.max())
            hits.setdefault("all", []).append(hit)
            hits.setdefault(f"{it.obj}:{it.affordance}", []).append(hit)
    return {k: float(np.mean(v)) for k, v in hits.items()}


def centre_prior_predict(images: Sequence[Image.Image], _texts: Sequence[str]) -> list[np.ndarray]:
    return [centre_prior(im.height, im.width) for im in images]


def save_heatmap_png(heat: np.ndarray, path: str | Path) -> None:
    """Heatmap in [0,1] -> 8-bit grayscale PNG (0-255)."""
    Image.fromarray(np.clip(np.round(heat * 255.0), 0, 255).astype(np.uint8), mode="L").save(path)
