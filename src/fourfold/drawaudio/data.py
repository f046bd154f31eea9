"""Training views of the procedural bouncing clips, with cached latents, loudness curves and text.

Views per clip (spec §5, ours): with probability 1/2 the mix with an all-ones mask and the caption
naming every object; otherwise object k's stem with its box mask and either its own caption ("a red ball
bounces", 1/2) or the neutral "something bounces" (1/2; with the neutral caption only the mask
tells which object sounds, the view MAM learns from). The enumeration is deterministic: each clip
contributes ``n_objects`` mix views and one view per object, so the mix is half of all views.

Every clip's mix also carries an **off-screen hum** (:class:`OffscreenHum`, ours) whose level follows a
random envelope drawn in the spec's per-impact gain range (-24..0 dB): a loudness change nothing in the
frames shows, so only the drawn curve can tell it (the TLM premise; without it the frame-loudness r is
ruled by impact timing, which the video already gives: see docs/drawaudio.md, "Why the curve added little
with video on"). The stems stay hum-free (the hum belongs to no object).

Cached per clip once (the frozen base never changes): VAE latents and loudness curves of the mix and of
every stem, frames sampled at the video rate (uint8), per-object masks. Text embeddings are cached per
distinct caption.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fourfold.data.bouncing import BouncingClip, BouncingConfig, make_clip
from fourfold.drawaudio.base import AudioBase
from fourfold.drawaudio.config import DrawAudioConfig
from fourfold.drawaudio.model import prepare_video
from fourfold.drawaudio.tlm import curve_from_audio

__all__ = [
    "NEUTRAL_CAPTION",
    "BounceViews",
    "OffscreenHum",
    "SampleViews",
    "bouncing_config_for",
    "clip_views",
    "procedural_clip",
    "with_offscreen_hum",
]

NEUTRAL_CAPTION = "something bounces"
NEUTRAL_PROB = 0.5  # share of single-object views captioned neutrally (ours; was 1/3, MAM learned slowly)


def bouncing_config_for(cfg: DrawAudioConfig, **changes) -> BouncingConfig:
    """Clips of exactly the model's window length and sample rate."""
    return BouncingConfig(duration=cfg.duration, sample_rate=cfg.mel.sample_rate, **changes)


@dataclass(frozen=True)
class OffscreenHum:
    """An off-screen hum added to a clip's mix, its level following a random piecewise-linear envelope (ours).

    The envelope's knots are uniform in ``gain_db`` (the spec's per-impact gain range, §5) every
    ``knot_seconds``, linear in dB between knots; the hum peaks at ``level_db`` dBFS (envelope 0 dB).
    Nothing in the video shows it, so its level is information only the loudness curve carries.
    """

    prob: float = 1.0  # share of clips that get the hum
    level_db: float = -20.0  # dBFS of the hum at envelope 0 dB (impacts peak near 0 dBFS)
    gain_db: tuple[float, float] = (-24.0, 0.0)  # envelope knot range, dB (spec §5's gain range)
    knot_seconds: float = 0.4  # spacing of the envelope's knots; slower than the TLM curve's 40-ms frames
    freq_hz: float = 120.0  # mains-like hum (spec §5's off-screen hum is 120 Hz)

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"OffscreenHum.prob must be in [0, 1], got {self.prob}")
        if self.gain_db[0] > self.gain_db[1] or self.gain_db[1] > 0:
            raise ValueError(f"OffscreenHum.gain_db must be lo <= hi <= 0 dB, got {self.gain_db}")
        if self.knot_seconds <= 0 or self.freq_hz <= 0:
            raise ValueError("OffscreenHum.knot_seconds and freq_hz must be positive")


DEFAULT_HUM = OffscreenHum()


def with_offscreen_hum(clip: BouncingClip, hum: OffscreenHum | None = DEFAULT_HUM) -> BouncingClip:
    """``clip`` with the hum added to its mix (deterministic from ``clip.seed``); stems, video, masks unchanged.

    ``clip.meta["offscreen_hum"]`` records the envelope (knot times in s, knot gains in dB, level, phase).
    """
    if hum is None:
        return clip
    rng = np.random.default_rng([clip.seed, 0x48554D])  # its own stream: the clip's own draws are untouched
    if rng.uniform() >= hum.prob:
        return clip
    sr, n = clip.sample_rate, len(clip.audio)
    t = np.arange(n) / sr
    knot_t = np.arange(math.ceil(n / sr / hum.knot_seconds) + 1) * hum.knot_seconds
    knot_db = rng.uniform(*hum.gain_db, size=len(knot_t))
    phase = rng.uniform(0, 2 * np.pi)
    env_db = np.interp(t, knot_t, knot_db)
    wave = 10 ** ((hum.level_db + env_db) / 20) * np.sin(2 * np.pi * hum.freq_hz * t + phase)
    meta = {**clip.meta, "offscreen_hum": {"level_db": hum.level_db, "knot_t": knot_t.tolist(),
                                           "knot_db": knot_db.tolist(), "phase": phase}}  # fmt: skip
    return dataclasses.replace(clip, audio=(clip.audio + wave).astype(np.float32), hum=True, meta=meta)


def procedural_clip(
    seed: int, clip_cfg: BouncingConfig, hum: OffscreenHum | None = DEFAULT_HUM
) -> BouncingClip:
    """The procedural clip the tiny Draw an Audio model trains and is evaluated on: BounceFoley + off-screen hum."""
    return with_offscreen_hum(make_clip(seed, clip_cfg), hum)


def clip_views(clip: BouncingClip, seed: int) -> list[dict[str, Any]]:
    """The view list of one clip: ``{"source": -1 (mix) | k, "caption": str}``."""
    rng = np.random.default_rng([seed, clip.seed])
    n = len(clip.kinds)
    views = [{"source": -1, "caption": clip.caption} for _ in range(n)]
    for k in range(n):
        caption = NEUTRAL_CAPTION if rng.uniform() < NEUTRAL_PROB else clip.captions[k]
        views.append({"source": k, "caption": caption})
    return views


class BounceViews(Dataset):
    """Map-style dataset of training views; items are the batch dict :meth:`DrawAudioModel.loss` takes.

    ``latents`` (C, H, T'), ``text`` (L, D), ``frames`` (F, 3, S, S) float, ``masks`` (F, S, S),
    ``times`` (F,), ``loudness`` (T',).
    """

    def __init__(
        self,
        base: AudioBase,
        cfg: DrawAudioConfig,
        n_clips: int,
        seed: int = 0,
        clip_cfg: BouncingConfig | None = None,
        encode_batch: int = 32,
        hum: OffscreenHum | None = DEFAULT_HUM,
    ):
        self.cfg, self.seed = cfg, seed
        self.clip_cfg = clip_cfg or bouncing_config_for(cfg)
        self.clips = [procedural_clip(seed + i, self.clip_cfg, hum) for i in range(n_clips)]
        self.views = [(i, v) for i, c in enumerate(self.clips) for v in clip_views(c, seed)]
        # audio sources per clip: row 0 = mix, row 1 + k = stem k
        wavs = [np.concatenate([c.audio[None], c.stems]) for c in self.clips]
        flat = torch.from_numpy(np.concatenate(wavs))
        latents = [
            base.encode_audio(flat[j : j + encode_batch]).cpu() for j in range(0, len(flat), encode_batch)
        ]
        per = 1 + self.clip_cfg.n_objects
        self.latents = torch.cat(latents).reshape(n_clips, per, *cfg.latent_shape)
        self.loudness = torch.stack(
            [torch.from_numpy(curve_from_audio(w, cfg, cfg.mel.sample_rate).values).float() for w in flat]
        ).reshape(n_clips, per, -1)
        self.frames, self.masks = [], []
        for c in self.clips:
            x, _, times = prepare_video(c.video, c.fps, cfg)
            self.frames.append((x * 255).round().to(torch.uint8))
            obj = [
                prepare_video(c.video, c.fps, cfg, mask=c.masks[k].astype(np.float32))[1]
                for k in range(per - 1)
            ]
            self.masks.append(torch.stack(obj).bool())
        self.times = times
        captions = sorted({v["caption"] for _, v in self.views})
        emb = base.encode_text(captions).cpu()
        self.text = {c: emb[i] for i, c in enumerate(captions)}

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        c, view = self.views[i]
        src = view["source"]
        frames = self.frames[c].float() / 255.0
        masks = torch.ones(frames.shape[0], *frames.shape[-2:]) if src < 0 else self.masks[c][src].float()
        return {
            "latents": self.latents[c, src + 1],
            "text": self.text[view["caption"]],
            "frames": frames,
            "masks": masks,
            "times": self.times,
            "loudness": self.loudness[c, src + 1],
        }


class SampleViews(Dataset):
    """Cached training items from any dataset of sample dicts (``video``, ``fps``, ``audio``, ``sr``,
    ``caption``, optional ``mask`` as mask.json dict / array), e.g. :class:`fourfold.data.vggsound.VGGSoundClips`.

    Each clip is cut or padded to the model's window (its first ``cfg.duration`` seconds). Unreadable
    clips raise from the reader with the file named; nothing is substituted.
    """

    def __init__(self, base: AudioBase, cfg: DrawAudioConfig, samples, encode_batch: int = 16):
        from fourfold.audio.io import resample
        from fourfold.drawaudio.masks import MaskInput

        self.items = []
        n = cfg.num_samples
        pending: list[tuple[dict, np.ndarray]] = []

        def flush():
            wav = torch.from_numpy(np.stack([w for _, w in pending]))
            lat = base.encode_audio(wav).cpu()
            emb = base.encode_text([it["caption"] for it, _ in pending]).cpu()
            for (it, w), z, e in zip(pending, lat, emb, strict=True):
                it.update(
                    latents=z, text=e, loudness=torch.from_numpy(curve_from_audio(w, cfg).values).float()
                )
                self.items.append(it)
            pending.clear()

        for s in samples:
            audio = np.asarray(s["audio"], dtype=np.float32)
            if s["sr"] != cfg.mel.sample_rate:
                audio = resample(audio, s["sr"], cfg.mel.sample_rate)
            audio = np.pad(audio[:n], (0, max(0, n - len(audio))))
            mask = s.get("mask")
            if isinstance(mask, dict):
                mask = MaskInput.from_dict(mask, where=str(s.get("meta", {}).get("id", "mask")))
            elif mask is not None:
                mask = MaskInput.from_array(mask)
            x, m, times = prepare_video(s["video"], s["fps"], cfg, mask)
            masks = m if m is not None else torch.ones(x.shape[0], *x.shape[-2:])
            pending.append(({"frames": (x * 255).round().to(torch.uint8), "masks": masks.bool(), "times": times,
                             "caption": s["caption"]}, audio))  # fmt: skip
            if len(pending) == encode_batch:
                flush()
        if pending:
            flush()
        if not self.items:
            raise ValueError("SampleViews: the dataset yielded no clips")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        it = self.items[i]
        return {
            "latents": it["latents"],
            "text": it["text"],
            "frames": it["frames"].float() / 255.0,
            "masks": it["masks"].float(),
            "times": it["times"],
            "loudness": it["loudness"],
        }
