"""AGD20K (Luo et al., CVPR 2022) as LOCATE and INTRA use it: labels, class ids and a tree reader.

Layout read here (one ``ROOT`` holds both splits)::

    ROOT/{Seen,Unseen}/trainset/exocentric/<affordance>/<object>/*.jpg   # INTRA trains on these only
    ROOT/{Seen,Unseen}/testset/egocentric/<affordance>/<object>/*.jpg    # evaluation images
    ROOT/{Seen,Unseen}/testset/GT/<affordance>/<object>/<stem>.png       # 8-bit grayscale heatmaps

Class ids follow LOCATE's fixed lists (not ``os.listdir`` order). GT files are matched to test images by
file stem (LOCATE's ``img[:-3] + "png"`` breaks on ``.jpeg``); a test image without GT is not a test item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "SEEN_AFFORDANCES",
    "SPLITS",
    "UNSEEN_AFFORDANCES",
    "UNSEEN_TEST_OBJECTS",
    "AGD20KError",
    "EgoItem",
    "ExoItem",
    "affordances_for",
    "label_text",
    "load_gt",
    "normalise_label",
    "read_exocentric",
    "read_mask_testset",
    "read_testset",
    "read_train",
]

# LOCATE's class lists (train.py / test.py), in their order: the index is the class id.
SEEN_AFFORDANCES: tuple[str, ...] = (
    "beat", "boxing", "brush_with", "carry", "catch", "cut", "cut_with", "drag", "drink_with", "eat", "hit",
    "hold", "jump", "kick", "lie_on", "lift", "look_out", "open", "pack", "peel", "pick_up", "pour", "push",
    "ride", "sip", "sit_on", "stick", "stir", "swing", "take_photo", "talk_on", "text_on", "throw", "type_on",
    "wash", "write",
)  # fmt: skip
UNSEEN_AFFORDANCES: tuple[str, ...] = (
    "carry", "catch", "cut", "cut_with", "drink_with", "eat", "hit", "hold", "jump", "kick", "lie_on", "open",
    "peel", "pick_up", "pour", "push", "ride", "sip", "sit_on", "stick", "swing", "take_photo", "throw",
    "type_on", "wash",
)  # fmt: skip
# INTRA supp. A.1: Unseen test objects, disjoint from the 35 training objects.
UNSEEN_TEST_OBJECTS: tuple[str, ...] = (
    "axe", "banana", "bed", "bicycle", "broccoli", "camera", "cup", "golf_clubs", "laptop", "refrigerator",
    "skis", "soccer_ball",
)  # fmt: skip
SPLITS = ("Seen", "Unseen")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class AGD20KError(ValueError):
    """The AGD20K tree (or a folder in its layout) is missing, empty or malformed; the message names the path."""


def normalise_label(label: str) -> str:
    """``"cut with"`` / ``"Cut_With "`` -> ``"cut_with"`` (the form used for class ids and folders)."""
    return "_".join(label.strip().lower().replace("_", " ").split())


def label_text(label: str) -> str:
    """The text the encoder sees for a label: underscores become spaces (INTRA §3.1)."""
    return normalise_label(label).replace("_", " ")


def affordances_for(split: str) -> tuple[str, ...]:
    if split not in SPLITS:
        raise AGD20KError(f"unknown AGD20K split {split!r}; expected one of {SPLITS}")
    return SEEN_AFFORDANCES if split == "Seen" else UNSEEN_AFFORDANCES


@dataclass(frozen=True)
class ExoItem:
    """One exocentric training image; ``obj`` is None when the folder has no object level."""

    path: Path
    affordance: str
    obj: str | None


@dataclass(frozen=True)
class EgoItem:
    """One egocentric test image and its GT heatmap path."""

    path: Path
    gt_path: Path
    affordance: str
    obj: str
    binary_gt: bool = False  # masks scored as GT = 1[mask > 0] (IIT-AFF / CAD / UMD, INTRA Tab. 2)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise AGD20KError(f"{what} not found: {path} (expected the AGD20K layout, see fourfold.data.agd20k)")
    return path


def read_exocentric(folder: str | Path, labels: tuple[str, ...] | None = None) -> list[ExoItem]:
    """Read ``folder/<affordance>/<object>/*`` or ``folder/<affordance>/*`` (object unknown).

    ``labels``: when given, every affordance folder must be one of them. Refuses an empty tree or one with a
    single affordance (the contrastive loss needs at least two labels).
    """
    folder = _require_dir(Path(folder), "exocentric folder")
    known = set(labels) if labels is not None else None
    items: list[ExoItem] = []
    for aff_dir in _subdirs(folder):
        aff = normalise_label(aff_dir.name)
        if known is not None and aff not in known:
            raise AGD20KError(f"{aff_dir}: unknown affordance {aff!r}; known: {sorted(known)}")
        items += [ExoItem(p, aff, None) for p in _images(aff_dir)]
        for obj_dir in _subdirs(aff_dir):
            items += [ExoItem(p, aff, normalise_label(obj_dir.name)) for p in _images(obj_dir)]
    if not items:
        raise AGD20KError(f"{folder}: no images (.jpg/.jpeg/.png) under <affordance>/[<object>/]")
    if len({it.affordance for it in items}) < 2:
        raise AGD20KError(
            f"{folder}: only one affordance ({items[0].affordance!r}); training needs at least two"
        )
    return items


def read_testset(
    root: str | Path, split: str, testset_dir: str = "testset", labels: Sequence[str] | None = None
) -> list[EgoItem]:
    """Egocentric test items of ``root/split/testset_dir``; each image paired with its GT PNG by stem.

    Images without a GT file are skipped (they are not test items in LOCATE either); a GT file without an
    image, an unknown affordance, or a tree with no pairs is an error naming the path. ``labels`` replaces
    LOCATE's list for the split (trees in this layout with other classes, e.g. the procedural world).
    """
    labels = tuple(labels) if labels is not None else affordances_for(split)
    base = _require_dir(Path(root) / split / testset_dir, f"AGD20K {split} test set")
    ego_root = _require_dir(base / "egocentric", "egocentric test folder")
    gt_root = _require_dir(base / "GT", "GT folder")
    items: list[EgoItem] = []
    for aff_dir in _subdirs(ego_root):
        aff = normalise_label(aff_dir.name)
        if aff not in labels:
            raise AGD20KError(f"{aff_dir}: unknown affordance {aff!r} for split {split}")
        for obj_dir in _subdirs(aff_dir):
            gt_dir = gt_root / aff_dir.name / obj_dir.name
            gts = {p.stem: p for p in _images(gt_dir)} if gt_dir.is_dir() else {}
            images = {p.stem: p for p in _images(obj_dir)}
            orphans = sorted(set(gts) - set(images))
            if orphans:
                raise AGD20KError(f"{gt_dir}: GT without an egocentric image: {orphans[:5]}")
            items += [
                EgoItem(images[s], gts[s], aff, normalise_label(obj_dir.name))
                for s in sorted(images)
                if s in gts
            ]
    if not items:
        raise AGD20KError(
            f"{base}: no egocentric image has a GT heatmap under GT/<affordance>/<object>/<stem>.png"
        )
    return items


def read_train(root: str | Path, split: str) -> list[ExoItem]:
    """Exocentric training items of ``root/split/trainset/exocentric`` with LOCATE's label list checked."""
    labels = affordances_for(split)
    folder = _require_dir(Path(root) / split / "trainset" / "exocentric", f"AGD20K {split} exocentric set")
    return read_exocentric(folder, labels)


def load_gt(path: str | Path, binary: bool = False) -> np.ndarray:
    """GT heatmap as float64 in [0, 1] (PNG / 255). RGB files become gray as cv2 does: round(.299R+.587G+.114B).

    ``binary``: a part mask, returned as 1[gray > 0] (how INTRA scores IIT-AFF, CAD and UMD, Tab. 2)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("L", "I;16", "I", "F"):
                arr = np.asarray(im.convert("L"), dtype=np.float64)
            else:
                rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
                arr = np.round(rgb @ np.array([0.299, 0.587, 0.114]))
    except (UnidentifiedImageError, OSError) as err:
        raise AGD20KError(f"cannot read GT heatmap {path}: {err}") from err
    return (arr > 0).astype(np.float64) if binary else arr / 255.0


def read_mask_testset(root: str | Path) -> list[EgoItem]:
    """A part-mask test set (IIT-AFF, CAD, UMD prepared for INTRA's Tab. 2) in this layout::

        ROOT/images/<stem>.{jpg,jpeg,png}
        ROOT/masks/<affordance>/<stem>.png      # any non-zero pixel is the part (binarised, as the paper does)
        ROOT/label_map.json                     # {"<affordance folder>": "<text to ground>", ...}

    Every mask folder needs a ``label_map.json`` entry (the dataset's verb → the interaction text, e.g.
    ``"grasp": "hold"``); the paper does not publish its mapping, so the file is the user's. Items carry the
    mapped text as ``affordance`` and ``binary_gt=True``. A mask without an image, an unmapped folder or an
    empty tree is an error naming the path.
    """
    import json

    root = _require_dir(Path(root), "mask test set")
    images_dir = _require_dir(root / "images", "images folder")
    masks_dir = _require_dir(root / "masks", "masks folder")
    map_path = root / "label_map.json"
    if not map_path.is_file():
        raise AGD20KError(f"{map_path} not found: it maps each masks/<affordance> folder to a text")
    try:
        label_map = json.loads(map_path.read_text())
    except json.JSONDecodeError as err:
        raise AGD20KError(f"{map_path}: not valid JSON ({err})") from err
    if not isinstance(label_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in label_map.items()
    ):
        raise AGD20KError(f"{map_path}: expected an object of non-empty strings {{folder: text}}")
    images = {p.stem: p for p in _images(images_dir)}
    items: list[EgoItem] = []
    for aff_dir in _subdirs(masks_dir):
        if aff_dir.name not in label_map:
            raise AGD20KError(f"{aff_dir}: no entry for {aff_dir.name!r} in {map_path}")
        text = normalise_label(label_map[aff_dir.name])
        masks = _images(aff_dir)
        orphans = sorted(m.stem for m in masks if m.stem not in images)
        if orphans:
            raise AGD20KError(f"{aff_dir}: masks without an image in {images_dir}: {orphans[:5]}")
        items += [EgoItem(images[m.stem], m, text, "", binary_gt=True) for m in masks]
    if not items:
        raise AGD20KError(f"{masks_dir}: no masks under masks/<affordance>/<stem>.png")
    return items
