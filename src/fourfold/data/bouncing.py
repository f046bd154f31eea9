"""Procedural "bouncing objects" clips: small videos whose floor impacts make sounds at known times.

Every clip holds ``n_objects`` shapes, each in its own vertical strip of the frame (left/right halves for
two), hopping on the floor. Each floor impact emits that object's sound at the exact sub-frame time with a
gain drawn uniformly in ``gain_db`` *independent of the visible speed*, so that (Draw an Audio spec §5):

- timing is only in the video (impact frames),
- gain is only in the loudness curve,
- identity (which object sounds) is only in the mask when the caption is neutral.

Kinds and timbres (spec §5): red ball = 880 Hz sine ringing 60 ms; blue square = noise burst + 180 Hz
thud; green triangle = 2.4 kHz click pair. Everything is numpy and deterministic given the seed.

Shapes: ``video`` (frames, H, W, 3) uint8; ``audio`` (samples,) float32; ``masks`` (objects, frames, H, W)
bool; ``boxes`` (objects, frames, 4) normalised ``[x0, y0, x1, y1]``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "KINDS",
    "BouncingClip",
    "BouncingConfig",
    "BouncingDataset",
    "ObjectKind",
    "make_clip",
    "write_clip",
]


@dataclass(frozen=True)
class ObjectKind:
    """One object type: how it looks and how its impact sounds."""

    name: str  # caption noun phrase, e.g. "red ball"
    shape: str  # "circle" | "square" | "triangle"
    color: tuple[int, int, int]  # RGB


KINDS: dict[str, ObjectKind] = {
    "ball": ObjectKind("red ball", "circle", (230, 40, 40)),
    "square": ObjectKind("blue square", "square", (40, 80, 235)),
    "triangle": ObjectKind("green triangle", "triangle", (40, 210, 60)),
}


@dataclass
class BouncingConfig:
    """Clip geometry, physics and sound. Defaults match the tiny Draw an Audio config (spec §4/§5)."""

    size: int = 64  # frame height = width, pixels
    fps: float = 25.0  # video frame rate
    duration: float = 2.56  # seconds (= 256 mel frames at hop 160, 16 kHz)
    sample_rate: int = 16000  # Hz
    n_objects: int = 2  # objects per clip, each in its own vertical strip
    kinds: tuple[str, ...] = ("ball", "square", "triangle")  # kinds drawn from (without replacement)
    object_size: int = 12  # pixels (diameter / side)
    # Sparse impacts (about 1.7 per second over two objects): with the onset metric's +-0.1 s tolerance a
    # denser clip lets onsets at random times hit most references (with hops of 0.25-0.7 s, 4.3 impacts/s,
    # a text-only model scored 0.51 hit accuracy against a 0.67 ceiling), so timing could not be measured.
    gravity: float = 150.0  # pixels / s^2; a hop of d seconds rises g*d^2/8 pixels (12-48 px here)
    hop_range: tuple[float, float] = (0.8, 1.6)  # seconds between one object's impacts (>= 150 ms)
    first_impact_range: tuple[float, float] = (0.08, 0.6)  # seconds
    gain_db: tuple[float, float] = (-24.0, 0.0)  # per-impact gain, uniform in dB
    hum_prob: float = 0.0  # probability of an off-screen 120 Hz hum (spec: optional, p = 0.2)
    hum_db: float = -30.0  # hum level relative to full scale

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"size must be >= 16 pixels, got {self.size}")
        if self.fps <= 0 or self.duration <= 0 or self.sample_rate <= 0:
            raise ValueError("fps, duration and sample_rate must be positive")
        if not 1 <= self.n_objects <= len(self.kinds):
            raise ValueError(f"n_objects must be in [1, {len(self.kinds)}], got {self.n_objects}")
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"kinds: unknown {unknown}; known {sorted(KINDS)}")
        if self.hop_range[0] < 0.15 or self.hop_range[1] < self.hop_range[0]:
            raise ValueError(f"hop_range must satisfy 0.15 <= lo <= hi, got {self.hop_range}")
        if not 0.0 <= self.hum_prob <= 1.0:
            raise ValueError(f"hum_prob must be in [0, 1], got {self.hum_prob}")

    @property
    def n_frames(self) -> int:
        return round(self.duration * self.fps)

    @property
    def n_samples(self) -> int:
        return round(self.duration * self.sample_rate)


@dataclass
class BouncingClip:
    """One generated clip. ``stems[k]`` is object k's sound alone; ``audio`` is their sum (+ hum)."""

    video: np.ndarray  # (frames, H, W, 3) uint8
    fps: float
    audio: np.ndarray  # (samples,) float32
    sample_rate: int
    stems: np.ndarray  # (objects, samples) float32
    masks: np.ndarray  # (objects, frames, H, W) bool, each object's bounding box per frame
    boxes: np.ndarray  # (objects, frames, 4) float32, normalised [x0, y0, x1, y1]
    kinds: list[str]  # per object, keys of KINDS
    onsets: list[np.ndarray]  # per object, impact times in seconds (sorted)
    gains_db: list[np.ndarray]  # per object, the gain of each impact
    caption: str  # names every object: "a red ball and a blue square bounce"
    captions: list[str]  # per object: "a red ball bounces"
    hum: bool
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def all_onsets(self) -> np.ndarray:
        """Every impact time of every object, sorted, seconds."""
        return np.sort(np.concatenate(self.onsets)) if self.onsets else np.zeros(0)

    def to_json(self) -> dict[str, Any]:
        """Ground truth as plain JSON (boxes per frame, onsets, gains, captions)."""
        return {
            "seed": self.seed,
            "fps": self.fps,
            "sample_rate": self.sample_rate,
            "caption": self.caption,
            "hum": self.hum,
            "objects": [
                {
                    "kind": k,
                    "caption": c,
                    "onsets": o.round(6).tolist(),
                    "gains_db": g.round(3).tolist(),
                    "boxes": b.round(5).tolist(),
                }
                for k, c, o, g, b in zip(
                    self.kinds, self.captions, self.onsets, self.gains_db, self.boxes, strict=True
                )
            ],
        }


# sounds


def _impact_sound(kind: str, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One impact of ``kind`` at unit peak, (samples,) float32. Noise uses ``rng`` (deterministic)."""
    t = np.arange(int(0.25 * sr)) / sr
    if kind == "ball":  # 880 Hz sine ringing with a 60 ms decay
        s = np.sin(2 * np.pi * 880.0 * t) * np.exp(-t / 0.06)
    elif kind == "square":  # noise burst + 180 Hz thud
        noise = rng.standard_normal(t.shape) * np.exp(-t / 0.012)
        s = 0.5 * noise / max(np.abs(noise).max(), 1e-9) + np.sin(2 * np.pi * 180.0 * t) * np.exp(-t / 0.08)
    elif kind == "triangle":  # 2.4 kHz click pair, 30 ms apart
        click = np.sin(2 * np.pi * 2400.0 * t) * np.exp(-t / 0.006)
        s = click.copy()
        lag = int(0.03 * sr)
        s[lag:] += 0.8 * click[:-lag]
    else:
        raise ValueError(f"unknown object kind {kind!r}")
    s[:8] *= np.linspace(0.0, 1.0, 8)  # no click from a non-zero first sample
    return (s / np.abs(s).max()).astype(np.float32)


def _place(out: np.ndarray, sound: np.ndarray, t: float, sr: int, gain: float) -> None:
    """Add ``sound`` starting at time ``t`` (sub-sample by linear interpolation of the start)."""
    start = t * sr
    i0 = math.floor(start)
    frac = start - i0
    # fractional delay: shift by frac samples via linear interpolation
    shifted = np.concatenate([[0.0], sound.astype(np.float64)])
    delayed = (1 - frac) * shifted[1:] + frac * shifted[:-1]
    end = min(len(out), i0 + len(delayed))
    if end > i0 >= 0:
        out[i0:end] += gain * delayed[: end - i0]


# pictures


@functools.lru_cache(maxsize=4)
def _pixel_centres(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    return yy + 0.5, xx + 0.5


def _draw(frame: np.ndarray, kind: ObjectKind, cx: float, cy: float, size: int) -> tuple[int, int, int, int]:
    """Draw one object centred at (cx, cy) pixels; return its integer box (x0, y0, x1, y1), x1/y1 exclusive."""
    h, w, _ = frame.shape
    r = size / 2
    py, px = _pixel_centres(h, w)
    if kind.shape == "circle":
        inside = (px - cx) ** 2 + (py - cy) ** 2 <= r**2
    elif kind.shape == "square":
        inside = (np.abs(px - cx) <= r) & (np.abs(py - cy) <= r)
    else:  # triangle pointing up: inside when below both slanted edges and above the base
        rel_y = (py - (cy - r)) / (2 * r)  # 0 at apex, 1 at base
        inside = (rel_y >= 0) & (rel_y <= 1) & (np.abs(px - cx) <= r * rel_y)
    frame[inside] = kind.color
    ys, xs = np.nonzero(inside)
    if len(ys) == 0:
        return (0, 0, 0, 0)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _hops(rng: np.random.Generator, cfg: BouncingConfig) -> np.ndarray:
    """Impact times covering [-hop, duration + hop]; consecutive ones are one ballistic hop apart."""
    times = [rng.uniform(*cfg.first_impact_range)]
    while times[0] > -cfg.hop_range[1]:
        times.insert(0, times[0] - rng.uniform(*cfg.hop_range))
    while times[-1] < cfg.duration + cfg.hop_range[1]:
        times.append(times[-1] + rng.uniform(*cfg.hop_range))
    return np.asarray(times)


def _height(t: np.ndarray, impacts: np.ndarray, g: float) -> np.ndarray:
    """Height above the floor at times ``t``: on a hop [a, b] the parabola g/2 (t-a)(b-t)."""
    idx = np.clip(np.searchsorted(impacts, t, side="right") - 1, 0, len(impacts) - 2)
    a, b = impacts[idx], impacts[idx + 1]
    return 0.5 * g * (t - a) * (b - t)


def make_clip(seed: int, cfg: BouncingConfig | None = None, kinds: list[str] | None = None) -> BouncingClip:
    """Generate one clip deterministically from ``seed`` (``kinds`` fixes the objects left to right)."""
    cfg = cfg or BouncingConfig()
    rng = np.random.default_rng(seed)
    if kinds is None:
        kinds = [str(k) for k in rng.choice(list(cfg.kinds), size=cfg.n_objects, replace=False)]
    elif len(kinds) != cfg.n_objects or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must be {cfg.n_objects} names from {sorted(KINDS)}, got {kinds}")
    n, size, sr = cfg.n_objects, cfg.size, cfg.sample_rate
    floor_y = size - 4  # pixel row of the floor line
    strip = size / n
    max_rise = floor_y - cfg.object_size - 2  # keep objects inside the frame
    frame_t = np.arange(cfg.n_frames) / cfg.fps

    video = np.empty((cfg.n_frames, size, size, 3), dtype=np.uint8)
    video[:] = (24, 24, 28)
    video[:, floor_y:, :] = (90, 90, 90)
    masks = np.zeros((n, cfg.n_frames, size, size), dtype=bool)
    boxes = np.zeros((n, cfg.n_frames, 4), dtype=np.float32)
    stems = np.zeros((n, cfg.n_samples), dtype=np.float64)
    onsets, gains = [], []
    for k, kind in enumerate(kinds):
        impacts = _hops(rng, cfg)
        cx0 = strip * (k + 0.5) + rng.uniform(-0.15, 0.15) * strip
        drift = rng.uniform(-0.1, 0.1) * strip / cfg.duration  # pixels / s, stays inside the strip
        rise = _height(frame_t, impacts, cfg.gravity)
        rise = rise * min(1.0, max_rise / max(rise.max(), 1e-9))  # clip very tall hops to the frame
        for f in range(cfg.n_frames):
            cx = cx0 + drift * frame_t[f]
            cy = floor_y - cfg.object_size / 2 - rise[f]
            x0, y0, x1, y1 = _draw(video[f], KINDS[kind], cx, cy, cfg.object_size)
            masks[k, f, y0:y1, x0:x1] = True
            boxes[k, f] = (x0 / size, y0 / size, x1 / size, y1 / size)
        inside = impacts[(impacts >= 0) & (impacts < cfg.duration)]
        g_db = rng.uniform(*cfg.gain_db, size=len(inside))
        for t, gdb in zip(inside, g_db, strict=True):
            _place(stems[k], _impact_sound(kind, sr, rng), float(t), sr, 10 ** (gdb / 20))
        onsets.append(inside)
        gains.append(g_db)
    audio = stems.sum(0)
    hum = bool(rng.uniform() < cfg.hum_prob)
    if hum:
        t = np.arange(cfg.n_samples) / sr
        audio = audio + 10 ** (cfg.hum_db / 20) * np.sin(2 * np.pi * 120.0 * t + rng.uniform(0, 2 * np.pi))
    names = [KINDS[k].name for k in kinds]
    caption = "a " + " and a ".join(names) + (" bounce" if n > 1 else " bounces")
    return BouncingClip(
        video=video,
        fps=cfg.fps,
        audio=audio.astype(np.float32),
        sample_rate=sr,
        stems=stems.astype(np.float32),
        masks=masks,
        boxes=boxes,
        kinds=list(kinds),
        onsets=onsets,
        gains_db=gains,
        caption=caption,
        captions=[f"a {nm} bounces" for nm in names],
        hum=hum,
        seed=seed,
        meta={"config": dataclasses.asdict(cfg)},
    )


class BouncingDataset:
    """``n`` clips, clip ``i`` generated from ``seed + i`` on first access (memoised, so cheap to revisit).

    Items are the spec's sample dicts: ``video`` (F,H,W,3) uint8, ``fps``, ``audio`` (samples,) float32,
    ``sr``, ``caption``, ``mask`` (F,H,W) bool (all ones: the whole mix), ``onsets`` (seconds, all objects),
    ``meta`` (``clip``: the :class:`BouncingClip` with stems, per-object masks and captions).
    """

    def __init__(self, n: int, seed: int = 0, cfg: BouncingConfig | None = None, cache: bool = True):
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        self.n, self.seed, self.cfg, self.cache = n, seed, cfg or BouncingConfig(), cache
        self._clips: dict[int, BouncingClip] = {}

    def __len__(self) -> int:
        return self.n

    def clip(self, i: int) -> BouncingClip:
        if not 0 <= i < self.n:
            raise IndexError(f"clip index {i} out of range [0, {self.n})")
        if i in self._clips:
            return self._clips[i]
        clip = make_clip(self.seed + i, self.cfg)
        if self.cache:
            self._clips[i] = clip
        return clip

    def __getitem__(self, i: int) -> dict[str, Any]:
        c = self.clip(i)
        return {
            "video": c.video,
            "fps": c.fps,
            "audio": c.audio,
            "sr": c.sample_rate,
            "caption": c.caption,
            "mask": np.ones(c.video.shape[:3], dtype=bool),
            "onsets": c.all_onsets,
            "meta": {"clip": c, "id": f"bounce_{self.seed + i:06d}"},
        }


def write_clip(clip: BouncingClip, out_dir: str | Path, stem: str) -> dict[str, Path]:
    """Store a clip as ``stem.mp4`` (video + AAC audio), ``stem.wav``, ``stem_stem{k}.wav`` and ``stem.json``.

    Each file is written to a temporary name and renamed, so a crash never leaves a half-written file.
    """
    from fourfold.audio import io as aio  # imported here: PyAV/soundfile only when writing
    from fourfold.nn.modeling import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"wav": out_dir / f"{stem}.wav", "mp4": out_dir / f"{stem}.mp4", "json": out_dir / f"{stem}.json"}
    aio.save_audio(paths["wav"], clip.audio, clip.sample_rate)
    for k, s in enumerate(clip.stems):
        paths[f"stem{k}"] = out_dir / f"{stem}_stem{k}.wav"
        aio.save_audio(paths[f"stem{k}"], s, clip.sample_rate)
    aio.write_video(paths["mp4"], clip.video, clip.fps, audio=clip.audio, sr=clip.sample_rate)
    atomic_write_text(paths["json"], json.dumps(clip.to_json()))
    return paths
