"""Two interleaved spirals: a procedural classification set for exercising the Trainer on CPU."""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset


class SpiralDataset(Dataset):
    """``n`` points on ``classes`` noisy spiral arms in 2-D, deterministic by ``seed``.

    Items are ``{"x": (2,) float32, "label": () int64}``. Linear models cannot separate the arms; a small
    MLP can, so the loss curve of a working trainer falls clearly below ``ln(classes)``.
    """

    def __init__(
        self, n: int = 1024, classes: int = 2, noise: float = 0.08, turns: float = 1.5, seed: int = 0
    ) -> None:
        if n < classes:
            raise ValueError(f"SpiralDataset.n must be >= classes ({classes}), got {n}")
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(n) % classes
        radius = torch.rand(n, generator=g) * 0.9 + 0.1
        angle = radius * turns * 2 * math.pi + labels * (2 * math.pi / classes)
        points = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
        self.x = (points + noise * torch.randn(n, 2, generator=g)).float()
        self.labels = labels.long()
        self.classes = classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "label": self.labels[index]}
