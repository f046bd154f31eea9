"""Training on the shared Trainer: the adapter (the paper's stage) and the tiny base (ours, CPU scale).

- :func:`train_adapter`: the paper's stage (spec §2.5). Only the video branch and TLM train; loss = MSE to
  the base scheduler's target with independent text/video/loudness dropout.
- :func:`pretrain_tiny_base`: builds the frozen text-to-audio base the tiny scale needs (the real scale
  loads Auffusion): a x4 mel AutoencoderKL (L1 + 1e-6 KL, ours) then a text-only x0-prediction UNet with
  the word encoder and adapter (the spec's premise: an eps-prediction base sampled noise on these
  silence-dominated mels). Written in Auffusion's layout, so it loads like any other base.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from fourfold.audio.mel import mel_spectrogram, mel_to_image
from fourfold.diffusion import training_step
from fourfold.drawaudio.base import build_tiny_base, tiny_scheduler, tiny_unet, tiny_vae
from fourfold.drawaudio.config import DrawAudioConfig
from fourfold.drawaudio.data import (
    DEFAULT_HUM,
    OffscreenHum,
    bouncing_config_for,
    clip_views,
    procedural_clip,
)
from fourfold.drawaudio.model import DrawAudioModel
from fourfold.drawaudio.text import ConditionAdapter, TextConditioner, WordEncoder, WordEncoderConfig
from fourfold.train import Trainer, TrainerConfig, TrainResult

__all__ = ["TimeBudget", "heldout_loss", "pretrain_tiny_base", "train_adapter"]


class TimeBudget:
    """Trainer callback: stop the run (by lowering ``max_steps``) once ``seconds`` have passed."""

    def __init__(self, seconds: float | None):
        self.seconds, self.start = seconds, time.monotonic()

    def __call__(self, trainer: Trainer, step: int) -> None:
        if self.seconds is not None and time.monotonic() - self.start > self.seconds:
            trainer.config.max_steps = min(trainer.config.max_steps, step)


def _trainer_config(out_dir, steps, batch, lr, seed, warmup=0, wd=0.0, progress=False, **kw) -> TrainerConfig:
    return TrainerConfig(
        output_dir=str(out_dir), max_steps=steps, batch_size=batch, learning_rate=lr, weight_decay=wd,
        warmup_steps=warmup, seed=seed, log_every=25, save_final_checkpoint=False, progress=progress, cpu=True, **kw,
    )  # fmt: skip


def train_adapter(
    model: DrawAudioModel,
    data: Dataset,
    out_dir: str | Path,
    steps: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    seconds: float | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train the adapter of ``model`` on ``data`` (items as :class:`~fourfold.drawaudio.data.BounceViews`).

    Defaults come from ``model.cfg.train``; ``seconds`` stops early on a time budget.
    """
    tc = model.cfg.train
    cfg = _trainer_config(
        out_dir, steps or tc.max_steps, batch_size or tc.batch_size, learning_rate or tc.learning_rate, tc.seed,
        warmup=tc.warmup_steps, wd=tc.weight_decay, progress=progress, max_grad_norm=tc.max_grad_norm,
        mixed_precision=tc.mixed_precision,
    )  # fmt: skip
    model.train()
    trainer = Trainer(
        model,
        cfg,
        data,
        lambda m, b: m(batch=b),
        params=model.adapter_parameters(),
        callbacks=[TimeBudget(seconds)],
    )
    result = trainer.fit()
    model.eval()
    return result


@torch.no_grad()
def heldout_loss(
    model: DrawAudioModel, data: Dataset, seed: int = 0, batch_size: int = 16, repeats: int = 2
) -> float:
    """Mean diffusion loss of ``model`` on every view of ``data`` with every condition kept, and noise and
    timesteps fixed by ``seed`` (the same draws on every call).

    A single training batch's loss swings with its random timesteps (x0-MSE at t near 0 vs near T differ
    many-fold), so comparing this number before and after training is the steady way to see learning.
    """
    from torch.utils.data import default_collate

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for r in range(repeats):
        for j in range(0, len(data), batch_size):
            items = [data[i] for i in range(j, min(len(data), j + batch_size))]
            g = torch.Generator().manual_seed(seed * 1_000_003 + r * 10_007 + j)
            loss, _ = model.loss(default_collate(items), generator=g, dropout=False)
            total, count = total + float(loss) * len(items), count + len(items)
    model.train(was_training)
    return total / count


# tiny base (ours)


class _MelImages(Dataset):
    def __init__(self, images: torch.Tensor, captions: list[str]):
        self.images, self.captions = images, captions

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "caption": self.captions[i]}


class _VAELoss(nn.Module):
    """L1 reconstruction + 1e-6 KL (ours) on mel images (B, 3, n_mels, frames)."""

    def __init__(self, vae: nn.Module, kl_weight: float = 1e-6):
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        image = batch["image"]
        dist = self.vae.encode(image).latent_dist
        recon = self.vae.decode(dist.sample()).sample
        l1 = (recon - image).abs().mean()
        kl = dist.kl().mean() / image[0].numel()
        return l1 + self.kl_weight * kl, {"l1": float(l1.detach())}


class _TextOnlyLoss(nn.Module):
    """Text-to-audio base objective: the scheduler's target MSE, text dropped to zeros with ``p_drop``."""

    def __init__(self, unet, text: TextConditioner, vae, scheduler, p_drop: float = 0.1):
        super().__init__()
        self.unet, self.text, self.p_drop = unet, text, p_drop
        self.vae, self.scheduler = vae, scheduler

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        latents = batch["latents"]
        emb = self.text(list(batch["caption"]))
        keep = (torch.rand(latents.shape[0]) >= self.p_drop).float()[:, None, None]
        out = training_step(self.unet, self.scheduler, latents, {"encoder_hidden_states": emb * keep})
        return out.loss, {"loss": float(out.loss.detach())}


def pretrain_tiny_base(
    out_dir: str | Path,
    cfg: DrawAudioConfig | None = None,
    n_clips: int = 400,
    vae_steps: int = 600,
    unet_steps: int = 1500,
    batch_size: int = 16,
    seed: int = 0,
    work_dir: str | Path | None = None,
    progress: bool = False,
    vae_from: str | Path | None = None,
    unet_from: str | Path | None = None,
    hum: OffscreenHum | None = DEFAULT_HUM,
) -> dict:
    """Train and write the tiny base (``vae/``, ``unet/``, ``scheduler/``, text encoder, adapter).

    Data: ``n_clips`` bouncing clips from ``seed``; each contributes its mix and stems with the captions
    of :func:`~fourfold.drawaudio.data.clip_views` (mixes with the off-screen ``hum``). ``vae_from`` (a
    base directory) starts from its trained ``vae/`` (with its latent scaling factor): used as it is when
    ``vae_steps`` is 0, else fine-tuned for ``vae_steps``. ``unet_from`` starts the UNet from that base's
    ``unet/`` (a warm start when only the data changed). Returns timings and final losses.
    """
    cfg = cfg or DrawAudioConfig.tiny()
    work = Path(work_dir or Path(out_dir).parent / f".{Path(out_dir).name}-work")
    t0 = time.monotonic()
    torch.manual_seed(seed)
    ccfg = bouncing_config_for(cfg)
    wavs, captions = [], []
    for i in range(n_clips):
        clip = procedural_clip(seed + i, ccfg, hum)
        for v in clip_views(clip, seed):
            wavs.append(clip.audio if v["source"] < 0 else clip.stems[v["source"]])
            captions.append(v["caption"])
    wav = torch.from_numpy(np.stack(wavs))
    images = torch.cat(
        [mel_to_image(mel_spectrogram(wav[j : j + 64], cfg.mel), cfg.mel) for j in range(0, len(wav), 64)]
    )
    vocab = sorted({w for c in captions for w in c.lower().split()})

    if vae_from is not None:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(str(Path(vae_from) / "vae"), local_files_only=True)
    else:
        vae = tiny_vae(cfg)
    if vae_from is not None and vae_steps <= 0:
        vae_res = TrainResult(step=0, losses=[], log_path=None, last_checkpoint=None)
    else:
        vae.train().requires_grad_(True)
        vae_res = Trainer(
            # a fine-tune starts gentler: Adam's first steps at 1e-3 undo a trained VAE (L1 0.06 -> 0.16 in 2)
            _VAELoss(vae), _trainer_config(work / "vae", vae_steps, batch_size, 1e-3 if vae_from is None else 2e-4,
                                           seed, warmup=0 if vae_from is None else 20, progress=progress),
            _MelImages(images, captions), lambda m, b: m(b),
        ).fit()  # fmt: skip
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        latents = torch.cat(
            [vae.encode(images[j : j + 64]).latent_dist.mode() for j in range(0, len(images), 64)]
        )
        recon_l1 = float((vae.decode(latents[:64]).sample - images[:64]).abs().mean())
    scale = float(vae.config.scaling_factor) if vae_from is not None else float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scale)
    latents = latents * scale

    if unet_from is not None:
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(str(Path(unet_from) / "unet"), local_files_only=True)
        unet.train().requires_grad_(True)
        # the text path the warm-started UNet learned with
        prev = TextConditioner.from_base_dir(Path(unet_from), cfg.base.text_max_tokens)
        enc, adapter = prev.encoders[0], prev.adapters[0]
        if not isinstance(enc, WordEncoder) or set(vocab) - set(enc.config.vocab):
            raise ValueError(f"unet_from={unet_from}: its text encoder is not a WordEncoder covering {vocab}")
        enc.train().requires_grad_(True)
        adapter.train().requires_grad_(True)
    else:
        unet = tiny_unet(cfg)
        enc = WordEncoder(WordEncoderConfig(vocab=["<unk>", *vocab], max_positions=cfg.base.text_max_tokens))
        adapter = ConditionAdapter(enc.config.dim, cfg.base.cross_attention_dim)
    text = TextConditioner([enc], [adapter], cfg.base.text_max_tokens)
    scheduler = tiny_scheduler("sample")

    class _Latents(Dataset):
        def __len__(self):
            return len(latents)

        def __getitem__(self, i):
            return {"latents": latents[i], "caption": captions[i]}

    unet_res = Trainer(
        _TextOnlyLoss(unet, text, vae, scheduler),
        _trainer_config(work / "unet", unet_steps, batch_size, 1e-3 if unet_from is None else 3e-4, seed,
                        warmup=50, progress=progress,
                        lr_schedule="cosine", min_lr_ratio=0.1),
        _Latents(), lambda m, b: m(b),
    ).fit()  # fmt: skip
    build_tiny_base(
        out_dir, cfg, vocab, seed, unet=unet.eval(), vae=vae, word_encoder=enc.eval(), adapter=adapter
    )
    return {
        "seconds": time.monotonic() - t0,
        "clips": n_clips,
        "vae_steps": vae_res.step,
        "vae_recon_l1": recon_l1,
        "latent_scaling_factor": scale,
        "unet_steps": unet_res.step,
        "unet_loss_first50": float(np.mean(unet_res.losses[:50])),
        "unet_loss_last50": float(np.mean(unet_res.losses[-50:])),
    }
