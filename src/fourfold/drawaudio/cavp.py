"""Train and check the tiny CAVP-style audio-visual embedder that CS-AV uses at the tiny scale (ours).

The paper's CS-AV embedder is unnamed and no ImageBind weights are reachable here, so
:class:`fourfold.metrics.csav.TinyCAVP` is trained contrastively on procedural clips (the same world the
tiny model lives in): each clip's audio against its own frames, the other clips of the batch as negatives.
Half of the training audio goes through the mel front end and Griffin-Lim first, so the embedder also
knows vocoded audio like the generator's. Clip seeds: 200_000 + i (disjoint from adapter training
``0..``, the demo's held-out loss ``50_000..`` and evaluation ``100_000..``); checks use 300_000 + i.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from fourfold.data.bouncing import BouncingConfig
from fourfold.drawaudio.data import procedural_clip
from fourfold.metrics.csav import TinyCAVP, TinyCAVPConfig, csav_from_embeddings, even_frames

__all__ = ["CAVP_CHECK_SEED", "CAVP_TRAIN_SEED", "cavp_check", "train_tiny_cavp"]

CAVP_TRAIN_SEED = 200_000
CAVP_CHECK_SEED = 300_000


@torch.no_grad()
def _mels(model: TinyCAVP, wavs: np.ndarray, vocode: bool, batch: int = 64) -> torch.Tensor:
    """The embedder's log-mels of ``wavs`` (B, samples) at 16 kHz, optionally after a Griffin-Lim round trip."""
    from fourfold.audio.mel import MelConfig, griffin_lim, mel_spectrogram

    tiny = MelConfig.tiny()
    out = []
    for j in range(0, len(wavs), batch):
        w = torch.from_numpy(wavs[j : j + batch])
        if vocode:
            w = griffin_lim(mel_spectrogram(w, tiny), tiny, length=w.shape[-1])
        out.append(model.log_mel(w, 16000))
    return torch.cat(out)


class _Clips(Dataset):
    """Cached log-mels (plain and vocoded) and small frames; each item picks one of the two mels."""

    def __init__(self, mels: torch.Tensor, vocoded: torch.Tensor, frames: torch.Tensor, seed: int):
        self.mels, self.vocoded, self.frames, self.rng = mels, vocoded, frames, np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.mels)

    def __getitem__(self, i: int) -> dict:
        mel = self.vocoded[i] if self.rng.uniform() < 0.5 else self.mels[i]
        return {"mel": mel, "frames": self.frames[i]}


def _clip_set(n: int, seed: int, cfg: TinyCAVPConfig) -> tuple[list, np.ndarray, torch.Tensor]:
    clips = [procedural_clip(seed + i, BouncingConfig()) for i in range(n)]
    wavs = np.stack([c.audio for c in clips])
    frames = torch.from_numpy(np.stack([even_frames(c.video, cfg.n_frames) for c in clips]))
    # resize once, exactly as embed_frames does, so training reads small frames
    x = F.interpolate(frames.flatten(0, 1).permute(0, 3, 1, 2).float(), size=(cfg.image_size,) * 2,
                      mode="bilinear", align_corners=False, antialias=True)  # fmt: skip
    small = (
        x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).reshape(n, cfg.n_frames, *x.shape[2:], 3)
    )
    return clips, wavs, small


@torch.no_grad()
def cavp_check(model: TinyCAVP, n: int = 64, seed: int = CAVP_CHECK_SEED) -> dict[str, float]:
    """On held-out clips: CS-AV of each clip's own audio vs another clip's (the next one), the fraction of
    clips where its own audio scores higher, and top-1 retrieval of the own audio among all ``n``."""
    model.eval()
    _, wavs, frames = _clip_set(n, seed, model.config)
    a = model.embed_audio(torch.from_numpy(wavs), 16000)
    v = model.embed_frames(frames)
    own = csav_from_embeddings(a, v)
    other = csav_from_embeddings(a.roll(1, dims=0), v)
    sims = F.normalize(v.mean(1), dim=-1) @ F.normalize(a, dim=-1).T  # (videos, audios)
    return {
        "csav_matched": float(own.mean()),
        "csav_mismatched": float(other.mean()),
        "matched_above_mismatched": float((own > other).mean()),
        "retrieval_top1": float((sims.argmax(dim=1) == torch.arange(n)).float().mean()),
        "check_clips": float(n),
    }


def train_tiny_cavp(
    out_dir: str | Path,
    n_clips: int = 1200,
    steps: int = 800,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    seed: int = 0,
    seconds: float | None = None,
    config: TinyCAVPConfig | None = None,
) -> dict:
    """Train :class:`TinyCAVP` on ``n_clips`` procedural clips and write it to ``out_dir`` (config.json +
    model.safetensors, atomically) with ``TRAINING.json`` (recipe, losses, :func:`cavp_check`)."""
    from fourfold.drawaudio.train import TimeBudget
    from fourfold.nn.modeling import atomic_write_text
    from fourfold.train import Trainer, TrainerConfig

    t0 = time.monotonic()
    cfg = config or TinyCAVPConfig()
    torch.manual_seed(seed)
    _, wavs, frames = _clip_set(n_clips, CAVP_TRAIN_SEED, cfg)
    model = TinyCAVP(cfg)
    data = _Clips(_mels(model, wavs, False), _mels(model, wavs, True), frames, seed)
    tc = TrainerConfig(output_dir=str(Path(out_dir).parent / f".{Path(out_dir).name}-work"), max_steps=steps,
                       batch_size=batch_size, learning_rate=learning_rate, weight_decay=1e-2, warmup_steps=50,
                       lr_schedule="cosine", min_lr_ratio=0.05, seed=seed, log_every=50,
                       save_final_checkpoint=False, cpu=True)  # fmt: skip
    result = Trainer(
        model, tc, data, lambda m, b: m.contrastive_loss(b["mel"], b["frames"]),
        callbacks=[TimeBudget(seconds)],
    ).fit()  # fmt: skip
    check = cavp_check(model)
    model.save_pretrained(out_dir)
    losses = np.asarray(result.losses)
    info = {
        "recipe": {"n_clips": n_clips, "clip_seeds": f"{CAVP_TRAIN_SEED}+i", "steps": result.step,
                   "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
                   "vocoded_share": 0.5, "call": f"train_tiny_cavp(out, n_clips={n_clips}, steps={steps})"},
        "loss_first50": float(losses[:50].mean()), "loss_last50": float(losses[-50:].mean()),
        "check_held_out": check, "seconds": time.monotonic() - t0,
    }  # fmt: skip
    atomic_write_text(Path(out_dir) / "TRAINING.json", json.dumps(info, indent=2))
    return info
