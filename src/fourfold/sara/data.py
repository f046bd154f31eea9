"""Image + caption folders for style fine-tuning (spec §5, Hugging Face image-folder convention).

A folder holds images (png/jpg/jpeg/webp) and either ``metadata.jsonl`` lines
``{"file_name": "a.jpg", "text": "caption"}`` or sidecar ``a.txt`` captions (our addition). Images are
resized so the shorter side equals ``resolution`` (bilinear), centre- or randomly cropped, optionally
flipped, and mapped to [−1, 1] with PIL + numpy. A bad or uncaptioned image is an error naming the file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def read_captions(folder: Path, instance_prompt: str | None = None) -> list[tuple[Path, str]]:
    """(image path, caption) pairs of ``folder``, sorted by file name.

    With ``instance_prompt`` (DreamBooth-style subject fine-tuning) every image gets that prompt and
    captions are not needed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder not found: {folder}")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    captions: dict[str, str] = {}
    meta = folder / "metadata.jsonl"
    if meta.is_file():
        for n, line in enumerate(meta.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                captions[str(row["file_name"])] = str(row["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{meta}:{n}: expected {{'file_name': ..., 'text': ...}}: {err}") from err
    if instance_prompt is not None:
        return [(img, instance_prompt) for img in images]
    pairs = []
    for img in images:
        text = captions.get(img.name)
        side = img.with_suffix(".txt")
        if text is None and side.is_file():
            text = side.read_text().strip()
        if text is None:
            raise ValueError(f"{img}: no caption (add it to metadata.jsonl or write {side.name})")
        pairs.append((img, text))
    return pairs


def load_image(path: Path, resolution: int, *, random_crop: bool = False, flip: bool = False) -> torch.Tensor:
    """One image → ``(3, resolution, resolution)`` float32 in [−1, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = resolution / min(w, h)
            im = im.resize(
                (max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BILINEAR
            )
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: cannot read image: {err}") from err
    w, h = im.size
    if random_crop:
        left, top = random.randint(0, w - resolution), random.randint(0, h - resolution)
    else:
        left, top = (w - resolution) // 2, (h - resolution) // 2
    im = im.crop((left, top, left + resolution, top + resolution))
    arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0  # (h, w, 3)
    if flip and random.random() < 0.5:
        arr = arr[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)


class CaptionedImages(Dataset):
    """Items ``{"pixel_values": (3, r, r), "text": prefix + caption}``; images are validated up front."""

    def __init__(
        self,
        folder: str | Path,
        resolution: int,
        *,
        prefix: str = "",
        random_crop: bool = False,
        flip: bool = False,
        instance_prompt: str | None = None,
    ) -> None:
        self.pairs = read_captions(Path(folder), instance_prompt)
        self.resolution, self.prefix, self.random_crop, self.flip = resolution, prefix, random_crop, flip
        for path, _ in self.pairs:
            load_image(path, 8)  # fail now, naming the file, not mid-run

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        path, text = self.pairs[i]
        img = load_image(path, self.resolution, random_crop=self.random_crop, flip=self.flip)
        return {"pixel_values": img, "text": self.prefix + text}


class WithPriorImages(Dataset):
    """DreamBooth prior preservation: instance items paired with class items (``class_`` keys).

    Item ``i`` is instance ``i`` plus class image ``i mod len(class)``, so every instance image is seen
    once per epoch together with a class image, as diffusers' ``train_dreambooth.py`` pairs them.
    """

    def __init__(self, instance: CaptionedImages, prior: CaptionedImages) -> None:
        if len(prior) == 0:
            raise ValueError("prior-preservation class folder holds no images")
        self.instance, self.prior = instance, prior

    def __len__(self) -> int:
        return len(self.instance)

    def __getitem__(self, i: int) -> dict:
        c = self.prior[i % len(self.prior)]
        return {**self.instance[i], "class_pixel_values": c["pixel_values"], "class_text": c["text"]}
