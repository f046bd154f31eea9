"""Drawn masks for MAM (spec §1, §2.3): boxes, bitmaps, keyframed ``mask.json``, and pluggable detectors.

``mask.json``: ``{"frames": [{"t": 0.0, "boxes": [[x0, y0, x1, y1], ...]}, ...]}`` with coordinates
normalised to [0, 1], linearly interpolated between keyframes (boxes matched by position in the list;
keyframes with different box counts switch at the later keyframe). A mask is rendered per video frame
as float (F, H, W) in {0, 1}; ``None`` everywhere means "the whole frame".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = [
    "ColorDetector",
    "Detector",
    "KeyphraseExtractor",
    "MaskError",
    "MaskInput",
    "detect_mask",
    "load_mask",
]


class MaskError(ValueError):
    """A mask input is malformed: names the file or field."""


def _check_box(box, where: str) -> list[float]:
    b = [float(v) for v in box]
    if len(b) != 4 or not all(np.isfinite(b)):
        raise MaskError(f"{where}: a box is [x0, y0, x1, y1], got {box}")
    if not (0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1):
        raise MaskError(f"{where}: box {box} must be normalised with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    return b


def _paint(boxes: list[list[float]], h: int, w: int) -> np.ndarray:
    out = np.zeros((h, w), dtype=np.float32)
    for x0, y0, x1, y1 in boxes:
        c0, c1 = int(np.floor(x0 * w)), int(np.ceil(x1 * w))
        r0, r1 = int(np.floor(y0 * h)), int(np.ceil(y1 * h))
        out[r0:r1, c0:c1] = 1.0
    return out


@dataclass
class MaskInput:
    """A user mask: keyframed boxes or a bitmap (one for the clip, or one per frame)."""

    keyframes: list[tuple[float, list[list[float]]]] = field(default_factory=list)  # (t seconds, boxes)
    bitmap: np.ndarray | None = None  # (H, W) or (F, H, W) in {0, 1}

    @classmethod
    def box(cls, xyxy, t: float = 0.0) -> MaskInput:
        """One normalised box ``[x0, y0, x1, y1]`` for the whole clip."""
        return cls(keyframes=[(float(t), [_check_box(xyxy, "MaskInput.box")])])

    @classmethod
    def from_json(cls, path: str | Path) -> MaskInput:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise MaskError(f"cannot read mask file {path}: {err}") from err
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: dict, where: str = "mask") -> MaskInput:
        frames = data.get("frames") if isinstance(data, dict) else None
        if not isinstance(frames, list) or not frames:
            raise MaskError(f"{where}: expected {{'frames': [{{'t': ..., 'boxes': [...]}}, ...]}}")
        keys = []
        for i, fr in enumerate(frames):
            if "t" not in fr or "boxes" not in fr:
                raise MaskError(f"{where}: frames[{i}] needs 't' and 'boxes'")
            keys.append((float(fr["t"]), [_check_box(b, f"{where}: frames[{i}]") for b in fr["boxes"]]))
        keys.sort(key=lambda k: k[0])
        return cls(keyframes=keys)

    @classmethod
    def from_array(cls, array) -> MaskInput:
        a = np.asarray(array)
        if a.ndim not in (2, 3) or a.size == 0:
            raise MaskError(f"a mask array must be (H, W) or (F, H, W), got shape {a.shape}")
        if not np.isfinite(a.astype(np.float64)).all():
            raise MaskError("a mask array contains NaN or infinite values")
        return cls(bitmap=(a > 0.5).astype(np.float32) if a.dtype != bool else a.astype(np.float32))

    @classmethod
    def from_image(cls, path: str | Path) -> MaskInput:
        from PIL import Image, UnidentifiedImageError

        try:
            img = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as err:
            raise MaskError(f"cannot read mask image {path}: {err}") from err
        return cls.from_array(img)

    def boxes_at(self, t: float) -> list[list[float]]:
        """Interpolated boxes at time ``t`` (seconds)."""
        keys = self.keyframes
        if t <= keys[0][0]:
            return keys[0][1]
        if t >= keys[-1][0]:
            return keys[-1][1]
        j = next(i for i in range(1, len(keys)) if keys[i][0] >= t)
        (t0, b0), (t1, b1) = keys[j - 1], keys[j]
        if len(b0) != len(b1):
            return b0
        a = (t - t0) / max(t1 - t0, 1e-9)
        return [[(1 - a) * p + a * q for p, q in zip(x, y, strict=True)] for x, y in zip(b0, b1, strict=True)]

    def render(
        self, times: np.ndarray, height: int, width: int, source_frames: int | None = None
    ) -> np.ndarray:
        """Mask for frames at ``times`` (F,) seconds -> (F, height, width) float32 in {0, 1}.

        A per-frame bitmap must have ``source_frames`` frames (the video's, before resampling) or exactly F.
        """
        f = len(times)
        if self.bitmap is None:
            return np.stack([_paint(self.boxes_at(float(t)), height, width) for t in times])
        bm = self.bitmap
        if bm.ndim == 3:
            if bm.shape[0] not in (f, source_frames):
                raise MaskError(
                    f"per-frame mask has {bm.shape[0]} frames; the video has {source_frames} (or {f} sampled)"
                )
            if bm.shape[0] != f:  # nearest source frame by timestamp
                idx = np.clip(np.round(np.linspace(0, bm.shape[0] - 1, f)).astype(int), 0, bm.shape[0] - 1)
                bm = bm[idx]
        else:
            bm = np.broadcast_to(bm, (f, *bm.shape))
        return _resize_nearest(bm, height, width)


def _resize_nearest(masks: np.ndarray, h: int, w: int) -> np.ndarray:
    rows = np.minimum((np.arange(h) + 0.5) * masks.shape[1] / h, masks.shape[1] - 1).astype(int)
    cols = np.minimum((np.arange(w) + 0.5) * masks.shape[2] / w, masks.shape[2] - 1).astype(int)
    return np.ascontiguousarray(masks[:, rows][:, :, cols]).astype(np.float32)


def load_mask(mask, video_hw: tuple[int, int] | None = None) -> MaskInput | None:
    """Anything the pipeline accepts -> :class:`MaskInput` (or ``None`` = whole frame).

    ``mask``: None | MaskInput | path to ``.json`` or an image | array (H, W) / (F, H, W). With ``video_hw``
    a bitmap must match the video's frame size (a wrong size is an error, not a silent resize).
    """
    if mask is None or isinstance(mask, MaskInput):
        out = mask
    elif isinstance(mask, str | Path):
        p = Path(mask)
        if not p.is_file():
            raise MaskError(f"mask file not found: {p}")
        out = MaskInput.from_json(p) if p.suffix.lower() == ".json" else MaskInput.from_image(p)
    else:
        out = MaskInput.from_array(mask)
    if (
        out is not None
        and out.bitmap is not None
        and video_hw is not None
        and out.bitmap.shape[-2:] != video_hw
    ):
        raise MaskError(f"mask size {out.bitmap.shape[-2:]} does not match the video frame size {video_hw}")
    return out


# automatic masks


class Detector(Protocol):
    """Pluggable open-vocabulary detector ([F] uses YOLO-World): normalised boxes per frame per phrase."""

    def detect(self, frames: np.ndarray, phrases: list[str]) -> list[list[list[float]]]:
        """``frames`` uint8 (F, H, W, 3) -> for each frame a list of boxes [x0, y0, x1, y1] in [0, 1]."""
        ...


_COLORS = {"red": (230, 40, 40), "blue": (40, 80, 235), "green": (40, 210, 60)}


class ColorDetector:
    """A detector for flat-coloured objects: the phrase's colour word ("red ball") picks pixels within
    ``tol`` of that colour; the box is their extent. Enough for the procedural clips; real videos plug in
    an open-vocabulary detector with the same ``detect`` signature."""

    def __init__(self, tol: float = 60.0):
        self.tol = tol

    def detect(self, frames: np.ndarray, phrases: list[str]) -> list[list[list[float]]]:
        f, h, w, _ = frames.shape
        colors = [_COLORS[c] for p in phrases for c in _COLORS if c in p.lower().split()]
        out: list[list[list[float]]] = [[] for _ in range(f)]
        for rgb in colors:
            hit = np.linalg.norm(frames.astype(np.float32) - np.asarray(rgb, np.float32), axis=-1) < self.tol
            for i in range(f):
                ys, xs = np.nonzero(hit[i])
                if len(ys):
                    out[i].append([xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h])
        return out


def detect_mask(detector: Detector, frames: np.ndarray, phrases: list[str]) -> np.ndarray | None:
    """Union of the detected boxes per frame -> (F, H, W) float32; ``None`` when nothing was detected."""
    f, h, w, _ = frames.shape
    boxes = detector.detect(frames, phrases)
    if len(boxes) != f:
        raise ValueError(f"detector returned boxes for {len(boxes)} frames, expected {f}")
    if not any(boxes):
        return None
    return np.stack([_paint(b, h, w) for b in boxes])


_DETERMINERS = {
    "a",
    "an",
    "the",
    "one",
    "two",
    "three",
    "some",
    "several",
    "many",
    "this",
    "that",
    "his",
    "her",
}
_STOP = {"and", "or", "with", "is", "are", "on", "in", "at", "from", "while", "as", "of", "to", "by", "near"}
_VERBS = {
    "bounces",
    "bounce",
    "barks",
    "bark",
    "meows",
    "meow",
    "plays",
    "play",
    "falls",
    "fall",
    "hits",
    "hit",
}


class KeyphraseExtractor:
    """Keyphrase for detection (ours, heuristic): the words after the first determiner up to the first
    conjunction, preposition, known verb or ``-ing`` word ("two cats meowing" -> "cats",
    "a red ball bounces" -> "red ball"). Without a determiner: the first word."""

    def __call__(self, caption: str) -> str:
        words = re.findall(r"[a-zA-Z']+", caption.lower())
        if not words:
            raise ValueError("cannot extract a keyphrase from an empty caption; pass phrase= explicitly")
        start = next((i + 1 for i, wd in enumerate(words) if wd in _DETERMINERS), 0)
        phrase = []
        for wd in words[start:]:
            if wd in _STOP or wd in _VERBS or wd.endswith("ing") or len(phrase) == 3:
                break
            phrase.append(wd)
        return " ".join(phrase) or words[min(start, len(words) - 1)]
