"""Image loading and the exocentric training set of INTRA (§4.1, supp. B.2).

Each exocentric image gives two views (our reading of the paper's "2N"): square resize to
``resize_size``, random crop ``image_size``, horizontal flip with probability 0.5 (flip ours).
``CachedExoFeatures`` runs the frozen image encoder once over a fixed set of augmented views per image
and serves those features, which is what makes CPU training fast (``cache_image_features=True``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from fourfold.data.agd20k import ExoItem
from fourfold.intra.losses import UNKNOWN_OBJECT

__all__ = [
    "CachedExoFeatures",
    "ExoImages",
    "ImageLoadError",
    "load_image",
    "synonym_texts",
    "to_tensor",
    "two_views",
]


class ImageLoadError(ValueError):
    """An image file cannot be read; the message names the path."""


def load_image(source: str | Path | Image.Image | np.ndarray) -> Image.Image:
    """Path / PIL image / (H,W,3) uint8 array -> RGB PIL image; a corrupt file raises naming its path."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3:
            raise ImageLoadError(f"image array must be (H, W, 3), got {source.shape}")
        return Image.fromarray(source.astype(np.uint8))
    path = Path(source)
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ImageLoadError(f"cannot read image {path}: {err}") from err


def to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """PIL -> (3, size, size) float in [0, 1] after a square PIL bilinear resize (LOCATE resizes with PIL)."""
    arr = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def two_views(image: torch.Tensor, crop: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(3, R, R) -> (2, 3, crop, crop): two random crops, each flipped horizontally with p = 0.5.

    ``generator`` None uses torch's global RNG, which the Trainer seeds.
    """
    size = image.shape[-1]
    views = []
    for _ in range(2):
        y, x = (int(v) for v in torch.randint(0, size - crop + 1, (2,), generator=generator))
        v = image[:, y : y + crop, x : x + crop]
        if float(torch.rand((), generator=generator)) < 0.5:
            v = v.flip(-1)
        views.append(v)
    return torch.stack(views)


def _indices(items: Sequence[ExoItem], labels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    label_id = {x: i for i, x in enumerate(labels)}
    unknown = sorted({it.affordance for it in items} - set(label_id))
    if unknown:
        raise ValueError(f"training items have affordances outside the label list: {unknown}")
    objects = sorted({it.obj for it in items if it.obj is not None})
    obj_id = {o: i for i, o in enumerate(objects)}
    y = torch.tensor([label_id[it.affordance] for it in items])
    o = torch.tensor([obj_id[it.obj] if it.obj is not None else UNKNOWN_OBJECT for it in items])
    return y, o, objects


class ExoImages(Dataset):
    """Exocentric items -> ``{"views": (2,3,S,S), "label": long, "object": long}`` with fresh augmentation."""

    def __init__(self, items: Sequence[ExoItem], labels: Sequence[str], resize: int, crop: int):
        self.items = list(items)
        self.labels = list(labels)
        self.y, self.o, self.objects = _indices(self.items, self.labels)
        self.resize, self.crop = resize, crop

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = to_tensor(load_image(self.items[i].path), self.resize)
        return {"views": two_views(image, self.crop), "label": self.y[i], "object": self.o[i]}


class CachedExoFeatures(Dataset):
    """Frozen-encoder features of two fixed augmented views per image, computed once.

    ``__getitem__`` -> ``{"feats": (2, N, d), "label", "object"}``. ``augment=False`` uses the plain resize to
    the crop size for both views (no crop, no flip).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        items: Sequence[ExoItem],
        labels: Sequence[str],
        *,
        resize: int,
        crop: int,
        augment: bool = True,
        seed: int = 0,
        batch_size: int = 32,
    ):
        self.items = list(items)
        self.labels = list(labels)
        self.y, self.o, self.objects = _indices(self.items, self.labels)
        gen = torch.Generator().manual_seed(seed)
        feats = []
        for lo in range(0, len(self.items), batch_size):
            views = []
            for it in self.items[lo : lo + batch_size]:
                img = load_image(it.path)
                if augment:
                    views.append(two_views(to_tensor(img, resize), crop, gen))
                else:
                    views.append(to_tensor(img, crop)[None].repeat(2, 1, 1, 1))
            views = torch.stack(views)  # (b, 2, 3, S, S)
            f = model.encode_image(views.flatten(0, 1))  # (2b, N, d)
            feats.append(f.reshape(len(views), 2, *f.shape[1:]))
        self.feats = torch.cat(feats)
        self.grid = (crop // model.patch_size, crop // model.patch_size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"feats": self.feats[i], "label": self.y[i], "object": self.o[i]}


def synonym_texts(
    labels: Sequence[str], label_ids: torch.Tensor, synonyms, rng: random.Random, p: float
) -> list[str]:
    """Conditioning text per view: the label text, or with probability ``p`` a synonym (supp. B.2)."""
    return [synonyms.text(labels[int(i)], rng, p) for i in label_ids]
