"""A procedural part world for affordance grounding, written in the AGD20K layout.

Objects are made of parts (knife = handle + blade + tip, mug = body + handle + rim, ...). Each part type
has its own colour, and every part of an object also carries that object's stripe texture (angle and
period per object), so an object's parts share object evidence while part types stay recognisable.

Each affordance acts on one part type (hold, carry -> handle; cut_with, wash -> blade; sip, drink_with ->
rim ...), so the relationship map "same part -> related" (INTRA §3.2's rule) is exact here.

- Exocentric training image: the object in a random pose plus an actor (an arm stroke from the border
  ending in a hand blob on the target part) and off-object context shapes. Arm colour and context shape
  are chosen by the affordance's *index inside its part group*, reused across groups (hold, cut_with,
  sip... share cue 0): the cue then says nothing about the part, but it is the only thing that separates
  hold from carry when related labels are treated as negatives (R = I), which is the paper's premise.
  A second hand touches another, random part of the object, so the hand alone does not give the part
  away: only the label text, consistent across images of one interaction, does.
- Egocentric test image: the object alone in a new pose; the GT of an affordance is the target part's
  mask blurred with a Gaussian (σ = 3% of the side), saved 0-255 like AGD20K.
- Seen: train and test on ten objects (knife, axe, mug, bowl, bottle, jar, hammer, mallet, chair, stool), so
  most part types occur on two objects. Unseen: test on held-out objects (cleaver, handle-less cup).

``make_affordance_world(out_dir, seed)`` writes ``{Seen,Unseen}/{trainset/exocentric,testset/{egocentric,GT}}``
plus ``relationship.csv``, ``synonyms.json``, ``heldout_texts.json`` and ``objects.json``.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fourfold.nn import atomic_write_text

__all__ = [
    "AFFORDANCE_PART",
    "HELDOUT_TEXTS",
    "OBJECTS",
    "OBJECT_TINTS",
    "PART_COLOURS",
    "SYNONYMS",
    "TEST_OBJECTS",
    "TRAIN_OBJECTS",
    "WorldConfig",
    "affordances_of",
    "cue_index",
    "make_affordance_world",
    "render_object",
    "world_labels",
]

# Part polygons in an object frame spanning about [-1, 1]²; y grows downwards like image rows.
Poly = list[tuple[float, float]]


def _rect(x0: float, y0: float, x1: float, y1: float) -> Poly:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


OBJECTS: dict[str, dict[str, list[Poly]]] = {
    "knife": {
        "handle": [_rect(-1.0, -0.16, -0.25, 0.16)],
        "blade": [[(-0.25, -0.24), (0.6, -0.24), (0.6, 0.2), (-0.25, 0.2)]],
        "tip": [[(0.6, -0.24), (1.0, 0.0), (0.6, 0.2)]],
    },
    "mug": {
        "body": [_rect(-0.55, -0.45, 0.45, 0.8)],
        "rim": [_rect(-0.62, -0.75, 0.52, -0.45)],
        "handle": [
            _rect(0.45, -0.3, 0.95, -0.12),
            _rect(0.77, -0.12, 0.95, 0.5),
            _rect(0.45, 0.5, 0.95, 0.68),
        ],
    },
    "bottle": {
        "body": [_rect(-0.42, -0.05, 0.42, 0.95)],
        "neck": [_rect(-0.18, -0.6, 0.18, -0.05)],
        "cap": [_rect(-0.25, -0.95, 0.25, -0.6)],
    },
    "hammer": {
        "handle": [_rect(-1.0, -0.13, 0.4, 0.13)],
        "head": [_rect(0.4, -0.55, 0.85, 0.55)],
    },
    "chair": {
        "seat": [_rect(-0.7, -0.1, 0.7, 0.2)],
        "back": [_rect(-0.7, -0.95, -0.45, -0.1)],
        "legs": [_rect(-0.7, 0.2, -0.52, 0.95), _rect(0.52, 0.2, 0.7, 0.95)],
    },
    # more training objects, so that most part types occur on two objects: grouping by part (what R says)
    # then differs from grouping by object, which a text-independent map could already do
    "axe": {
        "handle": [_rect(-1.0, -0.12, 0.45, 0.12)],
        "blade": [[(0.3, -0.12), (0.95, -0.55), (0.95, 0.25), (0.3, 0.12)]],
    },
    "bowl": {
        "body": [[(-0.8, -0.2), (0.8, -0.2), (0.5, 0.55), (-0.5, 0.55)]],
        "rim": [_rect(-0.9, -0.42, 0.9, -0.2)],
    },
    "jar": {
        "body": [_rect(-0.6, -0.25, 0.6, 0.9)],
        "neck": [_rect(-0.35, -0.55, 0.35, -0.25)],
        "cap": [_rect(-0.45, -0.85, 0.45, -0.55)],
    },
    "mallet": {
        "handle": [_rect(-0.95, -0.1, 0.35, 0.1)],
        "head": [_rect(0.35, -0.4, 0.95, 0.4)],
    },
    "stool": {
        "seat": [_rect(-0.6, -0.3, 0.6, 0.0)],
        "legs": [_rect(-0.55, 0.0, -0.38, 0.9), _rect(0.38, 0.0, 0.55, 0.9)],
    },
    # held-out test objects (Unseen split)
    "cleaver": {
        "handle": [_rect(-1.0, -0.14, -0.35, 0.14)],
        "blade": [_rect(-0.35, -0.6, 0.95, 0.22)],
    },
    "cup": {
        "body": [_rect(-0.5, -0.4, 0.5, 0.75)],
        "rim": [_rect(-0.58, -0.7, 0.58, -0.4)],
    },
}
TRAIN_OBJECTS = ("axe", "bottle", "bowl", "chair", "hammer", "jar", "knife", "mallet", "mug", "stool")
TEST_OBJECTS = {"Seen": TRAIN_OBJECTS, "Unseen": ("cleaver", "cup")}

PART_COLOURS: dict[str, tuple[int, int, int]] = {
    "handle": (150, 90, 40),
    "blade": (185, 195, 210),
    "tip": (220, 40, 40),
    "body": (40, 80, 200),
    "rim": (235, 210, 40),
    "neck": (40, 170, 70),
    "cap": (140, 50, 170),
    "head": (60, 60, 60),
    "seat": (240, 140, 30),
    "back": (30, 170, 170),
    "legs": (230, 120, 170),
}

# affordance -> the part it acts on
AFFORDANCE_PART: dict[str, str] = {
    "hold": "handle",
    "carry": "handle",
    "cut_with": "blade",
    "wash": "blade",
    "stick": "tip",
    "sip": "rim",
    "drink_with": "rim",
    "pour": "neck",
    "open": "cap",
    "sit_on": "seat",
    "lie_on": "seat",
    "push": "back",
    "beat": "head",
}
# Synonyms shown in training (AGD20K Tab. S2 where the label exists there) and texts never shown in
# training, used to test grounding of unseen phrasings.
SYNONYMS: dict[str, list[str]] = {
    "hold": ["grasp", "grip"],
    "carry": ["transport", "haul"],
    "cut_with": ["slice with", "carve with"],
    "wash": ["rinse", "cleanse"],
    "stick": ["pike with", "jab with"],
    "sip": ["nibble", "taste"],
    "drink_with": ["drink from", "quaff from"],
    "pour": ["flow", "dispense"],
    "open": ["unzip", "unpack"],
    "sit_on": ["sit upon", "perch on"],
    "lie_on": ["recline on", "lie upon"],
    "push": ["shove", "press"],
    "beat": ["strike", "pound"],
}
HELDOUT_TEXTS: dict[str, str] = {
    "hold": "clutch",
    "carry": "lug",
    "cut_with": "chop with",
    "wash": "scrub",
    "stick": "poke with",
    "sip": "slurp",
    "drink_with": "gulp from",
    "pour": "decant",
    "open": "uncap",
    "sit_on": "settle on",
    "lie_on": "sprawl on",
    "push": "nudge",
    "beat": "bash",
}

_ARM_COLOURS = ((230, 180, 150), (120, 80, 60), (250, 220, 200))  # by cue index
_CONTEXT_SHAPES = ("circle", "square", "triangle")  # by cue index


def world_labels() -> list[str]:
    return sorted(AFFORDANCE_PART)


def affordances_of(obj: str) -> list[str]:
    """Affordances whose part the object has."""
    return [a for a in world_labels() if AFFORDANCE_PART[a] in OBJECTS[obj]]


def cue_index(affordance: str) -> int:
    """Index of the affordance within its part group (alphabetical), reused across groups."""
    group = sorted(a for a, p in AFFORDANCE_PART.items() if p == AFFORDANCE_PART[affordance])
    return group.index(affordance)


@dataclass
class WorldConfig:
    size: int = 128  # image side in pixels
    exo_per_pair: int = 30  # exocentric images per (affordance, object) pair
    ego_per_object: int = 8  # egocentric test images per object (each scored for all its affordances)
    object_scale: tuple[float, float] = (0.26, 0.4)  # object half-size as a share of the side
    gt_sigma: float = 0.03  # GT blur σ as a share of the side
    distractor_hand_p: float = 1.0  # probability of a second hand on a non-target part
    # Arm colour and context shape coded by the affordance's index within its part group (True), or the
    # same for every affordance (False: then nothing in an image separates hold from carry, as R says).
    cues: bool = True


# Each object's tint, mixed into every one of its parts (with its stripes) so that any part of an object
# carries object evidence: otherwise L_obj (λ = 4) pulls every map onto the object's unique parts.
OBJECT_TINTS: dict[str, tuple[int, int, int]] = {
    "knife": (255, 0, 0),
    "mug": (0, 0, 255),
    "bottle": (0, 255, 0),
    "hammer": (255, 255, 0),
    "chair": (255, 0, 255),
    "cleaver": (0, 255, 255),
    "cup": (255, 255, 255),
    "axe": (255, 128, 0),
    "bowl": (0, 128, 255),
    "jar": (128, 255, 0),
    "mallet": (255, 0, 128),
    "stool": (0, 0, 0),
}
TINT = 0.3  # share of the object tint in a part's colour


def _object_texture(obj: str, size: int) -> np.ndarray:
    """(size, size) multiplicative stripe pattern in {0.7, 1.0}; angle and period fixed per object."""
    k = sorted(OBJECTS).index(obj)
    angle = math.pi * (k * 0.37 % 1.0)
    period = 5.0 + 2.0 * (k % 4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period
    return 0.85 + 0.15 * np.sign(np.sin(phase)).astype(np.float32)


def _background(rng: random.Random, size: int) -> np.ndarray:
    base = np.array([rng.randint(150, 255) for _ in range(3)], dtype=np.float32)
    noise = np.random.default_rng(rng.randrange(2**31)).normal(0, 8, (size, size, 3)).astype(np.float32)
    return np.clip(base + noise, 0, 255)


def _pose(rng: random.Random, size: int, scale: tuple[float, float]) -> tuple[float, float, float, float]:
    s = rng.uniform(*scale) * size
    cx = rng.uniform(s, size - s)
    cy = rng.uniform(s, size - s)
    return cx, cy, s, rng.uniform(0, 2 * math.pi)


def _transform(poly: Poly, pose: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    cx, cy, s, th = pose
    c, n = math.cos(th), math.sin(th)
    return [(cx + s * (x * c - y * n), cy + s * (x * n + y * c)) for x, y in poly]


def render_object(
    canvas: np.ndarray, obj: str, pose: tuple[float, float, float, float]
) -> dict[str, np.ndarray]:
    """Paint ``obj`` onto ``canvas`` (H,W,3 float) in place; returns {part: bool mask (H,W)}."""
    size = canvas.shape[0]
    texture = _object_texture(obj, size)[..., None]
    masks = {}
    for part, polys in OBJECTS[obj].items():
        im = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(im)
        for poly in polys:
            draw.polygon(_transform(poly, pose), fill=255)
        mask = np.asarray(im) > 0
        colour = (1 - TINT) * np.array(PART_COLOURS[part], np.float32) + TINT * np.array(
            OBJECT_TINTS[obj], np.float32
        )
        canvas[mask] = (colour * texture)[mask]
        masks[part] = mask
    return masks


def _context(canvas: np.ndarray, rng: random.Random, cue: int, avoid: np.ndarray, count: int) -> None:
    """Small cue-coded shapes placed off the object."""
    size = canvas.shape[0]
    im = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(im)
    shape = _CONTEXT_SHAPES[cue % len(_CONTEXT_SHAPES)]
    for _ in range(count):
        for _try in range(20):
            x, y, r = rng.uniform(6, size - 6), rng.uniform(6, size - 6), rng.uniform(3, 5)
            if not avoid[int(y), int(x)]:
                break
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        if shape == "circle":
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        elif shape == "square":
            draw.rectangle([x - r, y - r, x + r, y + r], fill=colour)
        else:
            draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=colour)
    canvas[...] = np.asarray(im, dtype=np.float32)


def _actor(canvas: np.ndarray, rng: random.Random, cue: int, target: np.ndarray) -> None:
    """An arm from a random border point to a point on the target part, ending in a hand blob."""
    size = canvas.shape[0]
    ys, xs = np.nonzero(target)
    k = rng.randrange(len(xs))
    hx, hy = float(xs[k]), float(ys[k])
    side = rng.randrange(4)
    t = rng.uniform(0, size)
    start = [(t, 0.0), (t, size - 1.0), (0.0, t), (size - 1.0, t)][side]
    im = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(im)
    colour = _ARM_COLOURS[cue % len(_ARM_COLOURS)]
    draw.line([start, (hx, hy)], fill=colour, width=max(3, size // 28))
    r = size * 0.045
    draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=colour)
    canvas[...] = np.asarray(im, dtype=np.float32)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8)).save(path)


def exocentric_image(rng: random.Random, cfg: WorldConfig, affordance: str, obj: str) -> np.ndarray:
    distractor_p = cfg.distractor_hand_p
    canvas = _background(rng, cfg.size)
    masks = render_object(canvas, obj, _pose(rng, cfg.size, cfg.object_scale))
    cue = cue_index(affordance) if cfg.cues else 0
    whole = np.any(np.stack(list(masks.values())), axis=0)
    _context(canvas, rng, cue, whole, count=rng.randint(2, 4))
    _actor(canvas, rng, cue, masks[AFFORDANCE_PART[affordance]])
    # A second hand on another part of the object: without it "look where the hand is" solves the
    # contrastive task with a text-independent map, which finds nothing on egocentric (hand-free) images.
    others = [p for p in masks if p != AFFORDANCE_PART[affordance] and masks[p].any()]
    if others and rng.random() < distractor_p:
        _actor(canvas, rng, cue, masks[rng.choice(others)])
    return canvas


def egocentric_image(
    rng: random.Random, cfg: WorldConfig, obj: str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    canvas = _background(rng, cfg.size)
    masks = render_object(canvas, obj, _pose(rng, cfg.size, cfg.object_scale))
    return canvas, masks


def _gt(mask: np.ndarray, sigma_px: float) -> np.ndarray:
    im = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(sigma_px))
    arr = np.asarray(im, dtype=np.float32)
    return arr * (255.0 / max(arr.max(), 1.0))


def make_affordance_world(
    out_dir: str | Path,
    seed: int = 0,
    config: WorldConfig | None = None,
    splits: Sequence[str] = ("Seen", "Unseen"),
) -> Path:
    """Write the world under ``out_dir`` (AGD20K layout); seconds for the default sizes. Returns ``out_dir``."""
    cfg = config or WorldConfig()
    out = Path(out_dir)
    labels = world_labels()
    for split in splits:
        rng = random.Random(f"{seed}-{split}")
        root = out / split
        if split != splits[0]:
            # Both splits train on the same five objects: hard-link the first split's exocentric images.
            shutil.copytree(
                out / splits[0] / "trainset", root / "trainset", copy_function=os.link, dirs_exist_ok=True
            )
        for obj in TRAIN_OBJECTS if split == splits[0] else ():
            for aff in affordances_of(obj):
                for i in range(cfg.exo_per_pair):
                    img = exocentric_image(rng, cfg, aff, obj)
                    _save_png(img, root / "trainset" / "exocentric" / aff / obj / f"{aff}_{obj}_{i:04d}.png")
        for obj in TEST_OBJECTS[split]:
            for i in range(cfg.ego_per_object):
                img, masks = egocentric_image(rng, cfg, obj)
                stem = f"{obj}_{i:04d}"
                for aff in affordances_of(obj):
                    _save_png(img, root / "testset" / "egocentric" / aff / obj / f"{stem}.png")
                    _save_png(
                        _gt(masks[AFFORDANCE_PART[aff]], cfg.gt_sigma * cfg.size),
                        root / "testset" / "GT" / aff / obj / f"{stem}.png",
                    )
    rows = ["a,b,related,source,note"]
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            rel = int(AFFORDANCE_PART[a] == AFFORDANCE_PART[b])
            rows.append(f"{a},{b},{rel},world,{AFFORDANCE_PART[a]} vs {AFFORDANCE_PART[b]}")
    atomic_write_text(out / "relationship.csv", "\n".join(rows) + "\n")
    atomic_write_text(out / "synonyms.json", json.dumps(SYNONYMS, indent=1) + "\n")
    atomic_write_text(out / "heldout_texts.json", json.dumps(HELDOUT_TEXTS, indent=1) + "\n")
    objects = {o: {"parts": sorted(OBJECTS[o]), "affordances": affordances_of(o)} for o in OBJECTS}
    meta = {"seed": seed, "labels": labels, "affordance_part": AFFORDANCE_PART, "objects": objects,
            "test_objects": TEST_OBJECTS, "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}  # fmt: skip
    atomic_write_text(out / "objects.json", json.dumps(meta, indent=1) + "\n")
    return out
