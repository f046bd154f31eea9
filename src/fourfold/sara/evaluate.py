"""Real-scale evaluation helpers for ``fourfold sara eval`` (spec §6): CLIP score and feature FD.

CLIP score: a local CLIP directory (ViT-L/14 in the paper), 100·cos(image, text) averaged over pairs (what
``logits_per_image`` gives for a logit scale of 100), prompts including the style prefix. FID: the
Fréchet distance of :mod:`fourfold.metrics.frechet` between two feature files (``.npy``, (samples, dim)),
e.g. 2048-d InceptionV3 pool features extracted with torch-fidelity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fourfold.sara.data import IMAGE_SUFFIXES

CLIP_SCALE = 100.0


def list_images(folder: Path) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no images")
    return files


@torch.no_grad()
def clip_score(images: list[Path], texts: list[str], clip_dir: str | Path, batch: int = 16) -> float:
    """Mean 100·cos(CLIP image embedding, CLIP text embedding) over aligned (image, text) pairs."""
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    if len(images) != len(texts):
        raise ValueError(f"clip_score: {len(images)} images but {len(texts)} prompts")
    model = CLIPModel.from_pretrained(clip_dir, dtype=torch.float32).eval()
    proc = CLIPProcessor.from_pretrained(clip_dir)
    scores = []
    for lo in range(0, len(images), batch):
        ims = [Image.open(p).convert("RGB") for p in images[lo : lo + batch]]
        inputs = proc(
            text=texts[lo : lo + batch],
            images=ims,
            return_tensors="pt",
            padding="max_length",
            truncation=True,
        )
        img = model.get_image_features(pixel_values=inputs["pixel_values"])
        txt = model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")
        )
        img = getattr(img, "pooler_output", img)
        txt = getattr(txt, "pooler_output", txt)
        cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
        scores.append(CLIP_SCALE * cos)
    return float(torch.cat(scores).mean())


def feature_fd(features: Path, reference: Path) -> float:
    """FD between two saved feature arrays (samples, dim), as torch-fidelity computes FID."""
    from fourfold.metrics.frechet import frechet_distance_from_features

    return frechet_distance_from_features(np.load(features), np.load(reference))
