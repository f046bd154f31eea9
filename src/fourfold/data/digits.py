"""Procedural style-transfer data from scikit-learn's 8×8 digits (SaRA demo, spec §5).

Source S: all 1,797 ``load_digits`` images (0–16 ink) scaled to [−1, 1] (−1 background, +1 ink) and
bilinearly resized to ``resolution``, prompt ``[plain, digit]``. Target style T: a deterministic transform
of S ("outline": 3×3 morphological gradient; "bold": 3×3 dilation; "inverse": negation; "faint": ink at
half intensity), prompt ``[style, digit]``. The fine-tune set is ``n_finetune`` T images of the seen
classes 0–4 drawn from the fixed 80 % train split; classes 5–9 in style T probe generalisation like the
paper's unseen prompts.

Pretraining set (``pretrain_set``): S plus "known" styles, each under its own token, so that the base
model learns that the first prompt token selects a style, as a text-to-image model has learned from
style words. The fine-tune style T then comes with a word the base has never seen (``style``), like the
paper's "<name> style" prefix.

Prompts are token pairs over the vocabulary ``TOKENS``: index 0 = plain, 1 = style (the new fine-tune
word), 2 + d = digit d, then one token per named style (``style_token(name)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

__all__ = [
    "DIGIT_TOKEN_OFFSET",
    "PLAIN",
    "STYLE",
    "STYLES",
    "TOKENS",
    "DigitImages",
    "apply_style",
    "digit_split",
    "finetune_set",
    "load_digit_images",
    "pretrain_set",
    "prompt_tokens",
    "source_set",
    "style_token",
]

PLAIN, STYLE, DIGIT_TOKEN_OFFSET = 0, 1, 2
STYLES = ("outline", "bold", "inverse", "faint")
# named style tokens come after the digits, so the first 12 rows of a seeded token table never change
TOKENS = ("plain", "style", *(str(d) for d in range(10)), *STYLES)
FAINT_INK = 0.5  # "faint": ink intensity scale
SPLIT_SEED = 0  # fixed 80/20 split
TRAIN_SHARE = 0.8
INK_MAX = 16.0  # load_digits pixel range is 0..16


def load_digit_images(resolution: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as ``(1797, 1, resolution, resolution)`` float32 in [−1, 1] and labels ``(1797,)``."""
    from sklearn.datasets import load_digits

    if resolution < 8:
        raise ValueError(f"resolution must be ≥ 8 (the digits are 8×8), got {resolution}")
    data = load_digits()
    x = torch.from_numpy(data.images).float().unsqueeze(1) / INK_MAX * 2.0 - 1.0  # (N, 1, 8, 8)
    if resolution != 8:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.clamp(-1.0, 1.0), torch.from_numpy(data.target).long()


def digit_split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed (seeded) 80/20 permutation split → (train indices, test indices)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    cut = round(TRAIN_SHARE * n)
    return perm[:cut].sort().values, perm[cut:].sort().values


def apply_style(images: torch.Tensor, style: str = "outline") -> torch.Tensor:
    """Deterministic style transform of ``(batch, 1, h, w)`` images in [−1, 1]."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if style == "inverse":
        return -images
    ink = (images + 1.0) / 2.0  # [0, 1]
    if style == "faint":
        return FAINT_INK * ink * 2.0 - 1.0
    dilated = F.max_pool2d(ink, 3, stride=1, padding=1)
    if style == "bold":
        out = dilated
    else:  # outline: morphological gradient = dilation − erosion
        eroded = -F.max_pool2d(-ink, 3, stride=1, padding=1)
        out = dilated - eroded
    return out * 2.0 - 1.0


def style_token(style: str) -> int:
    """Token id of a named style (used for the pretraining set's known styles)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    return TOKENS.index(style)


def prompt_tokens(style_token: int, digits: torch.Tensor) -> torch.Tensor:
    """``(batch,)`` digits → ``(batch, 2)`` token ids ``[style_or_plain, digit]``."""
    return torch.stack([torch.full_like(digits, style_token), digits + DIGIT_TOKEN_OFFSET], dim=1)


@dataclass
class DigitImages(Dataset):
    """Images ``(n, 1, r, r)``, labels ``(n,)`` and prompt tokens ``(n, 2)``; items are dicts."""

    images: torch.Tensor
    labels: torch.Tensor
    tokens: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": self.labels[i], "tokens": self.tokens[i]}


def source_set(split: str = "train", resolution: int = 16) -> DigitImages:
    """S: every class in the plain style, prompt ``[plain, d]``."""
    x, y = load_digit_images(resolution)
    train, test = digit_split(len(y))
    idx = {"train": train, "test": test}[split]
    return DigitImages(x[idx], y[idx], prompt_tokens(PLAIN, y[idx]))


def finetune_set(
    style: str = "outline",
    split: str = "train",
    resolution: int = 16,
    classes: tuple[int, ...] = (0, 1, 2, 3, 4),
    n: int | None = 200,
) -> DigitImages:
    """T: styled images of ``classes`` (first ``n`` of the split, in a fixed order), prompt ``[style, d]``."""
    x, y = load_digit_images(resolution)
    train, test = digit_split(len(y))
    idx = {"train": train, "test": test}[split]
    idx = idx[torch.isin(y[idx], torch.tensor(classes))]
    if n is not None:
        if n > len(idx):
            raise ValueError(
                f"finetune_set: asked for {n} images, split {split!r} has {len(idx)} of {classes}"
            )
        idx = idx[:n]
    return DigitImages(apply_style(x[idx], style), y[idx], prompt_tokens(STYLE, y[idx]))


def pretrain_set(resolution: int = 16, known_styles: tuple[str, ...] = ()) -> DigitImages:
    """S (train split, prompt ``[plain, d]``) plus each known style of it under its own token."""
    s = source_set("train", resolution)
    parts = [s]
    for name in known_styles:
        tok = prompt_tokens(style_token(name), s.labels)
        parts.append(DigitImages(apply_style(s.images, name), s.labels, tok))
    return DigitImages(
        torch.cat([p.images for p in parts]),
        torch.cat([p.labels for p in parts]),
        torch.cat([p.tokens for p in parts]),
    )
