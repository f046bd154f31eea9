"""The frozen text-to-audio base in Auffusion's directory layout (spec §2.1), loaded from a local path only.

::

    base/
      vae/                  diffusers AutoencoderKL (mel image 3 x n_mels x frames <-> latent)
      unet/                 diffusers UNet2DConditionModel (cross-attention on the text tokens)
      scheduler/            any diffusers scheduler config (its prediction type and betas are used)
      condition_config.json [{"text_encoder_name": ..., "condition_adapter_name": ...}, ...]
      <text encoder>/ <adapter>/
      vocoder/              optional: config.json + vocoder.pt ({"generator": weight-norm state}); else Griffin-Lim

:func:`build_tiny_base` writes a random tiny base of exactly this layout (tests, demo), so both scales load
through the same :func:`load_base`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fourfold.audio.mel import MelConfig, griffin_lim, image_to_mel, mel_spectrogram, mel_to_image
from fourfold.drawaudio.config import DrawAudioConfig
from fourfold.drawaudio.text import ConditionAdapter, TextConditioner, WordEncoder, WordEncoderConfig
from fourfold.nn.modeling import CheckpointError, atomic_write_dir, atomic_write_text

__all__ = ["AudioBase", "build_tiny_base", "load_base", "tiny_unet", "tiny_vae"]


@dataclass
class AudioBase:
    """The frozen components. Shapes: wav (B, samples); mel (B, n_mels, frames); latents (B, 4, n_mels/f, frames/f)."""

    unet: nn.Module
    vae: nn.Module
    scheduler: object
    text: TextConditioner
    mel: MelConfig
    vocoder: nn.Module | None = None
    path: str = ""

    def modules(self) -> dict[str, nn.Module]:
        mods = {"unet": self.unet, "vae": self.vae, "text": self.text}
        if self.vocoder is not None:
            mods["vocoder"] = self.vocoder
        return mods

    def freeze(self) -> AudioBase:
        for m in self.modules().values():
            m.requires_grad_(False)
            m.eval()
        return self

    def to(self, device) -> AudioBase:
        for m in self.modules().values():
            m.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def scaling_factor(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 1.0))

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type

    @torch.no_grad()
    def encode_audio(self, wav: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """(B, samples) -> latents (B, C, n_mels/f, frames/f): log-mel -> image -> VAE mean (x scaling)."""
        image = mel_to_image(mel_spectrogram(wav.to(self.device), self.mel), self.mel)
        dist = self.vae.encode(image.to(self.vae.dtype)).latent_dist
        return (dist.sample() if sample else dist.mode()) * self.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """latents -> log-mel (B, n_mels, frames)."""
        image = self.vae.decode(latents.to(self.vae.dtype) / self.scaling_factor).sample
        return image_to_mel(image.float(), self.mel)

    @torch.no_grad()
    def vocode(self, mel: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """log-mel (B, n_mels, frames) -> wav (B, samples): HiFi-GAN when the base has one, else Griffin-Lim."""
        if self.vocoder is not None:
            wav = self.vocoder(mel.to(self.device)).float().reshape(mel.shape[0], -1)
            if length is not None:
                wav = torch.nn.functional.pad(wav, (0, max(0, length - wav.shape[-1])))[:, :length]
            return wav
        return griffin_lim(mel.float().cpu(), self.mel, length=length)

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        return self.text(prompts)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise CheckpointError(f"base directory: {what} missing: {path}")
    return path


def _load_vocoder(root: Path) -> nn.Module:
    vdir = root / "vocoder"
    _need(vdir / "config.json", "vocoder config")
    _need(vdir / "vocoder.pt", "vocoder weights (Auffusion's vocoder.pt)")
    from fourfold.audio.vocoder import HiFiGAN

    return HiFiGAN.from_auffusion(vdir).eval()


def load_base(path: str | Path, cfg: DrawAudioConfig) -> AudioBase:
    """Load a local Auffusion-layout directory (never the hub); every part is checked and named on error."""
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"base directory not found: {root}")
    unet = UNet2DConditionModel.from_pretrained(str(_need(root / "unet", "unet/")), local_files_only=True)
    vae = AutoencoderKL.from_pretrained(str(_need(root / "vae", "vae/")), local_files_only=True)
    sched_cfg_path = _need(root / "scheduler" / "scheduler_config.json", "scheduler config")
    sched_cfg = json.loads(sched_cfg_path.read_text())
    sched_cls = getattr(diffusers, sched_cfg.get("_class_name", "DDIMScheduler"), None)
    if sched_cls is None:
        raise CheckpointError(f"{sched_cfg_path}: unknown scheduler class {sched_cfg.get('_class_name')!r}")
    scheduler = sched_cls.from_pretrained(str(root / "scheduler"))
    text = TextConditioner.from_base_dir(root, cfg.base.text_max_tokens)
    vocoder = None
    if cfg.base.vocoder == "auto" and (root / "vocoder").exists():
        vocoder = _load_vocoder(root)
    mel_frames, n_mels = cfg.mel_frames, cfg.mel.n_mels
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    if f != cfg.base.vae_factor:
        raise CheckpointError(
            f"{root / 'vae'}: down-sampling x{f} but config base.vae_factor = {cfg.base.vae_factor}"
        )
    if unet.config.in_channels != cfg.base.latent_channels:
        raise CheckpointError(
            f"{root / 'unet'}: in_channels {unet.config.in_channels} != base.latent_channels {cfg.base.latent_channels}"
        )
    if mel_frames % f or n_mels % f:
        raise CheckpointError(f"mel ({n_mels} x {mel_frames}) is not divisible by the VAE factor {f}")
    base = AudioBase(
        unet=unet, vae=vae, scheduler=scheduler, text=text, mel=cfg.mel, vocoder=vocoder, path=str(root)
    )
    return base.freeze()


# tiny random components (same layout; tests and the demo)


def tiny_unet(cfg: DrawAudioConfig):
    """Spec §4 tiny UNet: block_out (32, 64), 1 layer per block, head dim 8, cross-attention 32.

    Attention only at the coarser level (ours): full-resolution self-attention over 16 x 64 positions
    cost 2.7x the step time on CPU; text and video still enter through every ``attn2`` of the
    down/mid/up blocks that have attention.
    """
    from diffusers import UNet2DConditionModel

    c, h, w = cfg.latent_shape
    return UNet2DConditionModel(
        sample_size=(h, w),
        in_channels=c,
        out_channels=c,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cfg.base.cross_attention_dim,
        attention_head_dim=(4, 8),  # diffusers reads this as head *count*: 32/4 = 64/8 = head dim 8
        norm_num_groups=8,
    )


def tiny_vae(cfg: DrawAudioConfig):
    """x4 AutoencoderKL on 3-channel mel images (spec §4: 4 x 16 x 64 latents for 64 x 256 mels).

    Narrow (8, 16, 32) channels and no mid-block attention (ours): sized for CPU training in minutes.
    """
    from diffusers import AutoencoderKL

    levels = {4: 3, 8: 4}[cfg.base.vae_factor]
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=cfg.base.latent_channels,
        block_out_channels=(8, 16, 32, 32)[:levels],
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        layers_per_block=1,
        norm_num_groups=8,
        mid_block_add_attention=False,
        sample_size=cfg.mel.n_mels,
    )


def tiny_scheduler(prediction_type: str = "sample"):
    """DDIM with Auffusion's betas (scaled-linear 0.00085 -> 0.012); the tiny base predicts x0 (spec §5 premise)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def build_tiny_base(
    path: str | Path,
    cfg: DrawAudioConfig,
    vocab: list[str],
    seed: int = 0,
    unet=None,
    vae=None,
    word_encoder: WordEncoder | None = None,
    adapter: ConditionAdapter | None = None,
    prediction_type: str = "sample",
) -> Path:
    """Write a tiny base directory (random components unless given), atomically."""
    torch.manual_seed(seed)
    unet = unet if unet is not None else tiny_unet(cfg)
    vae = vae if vae is not None else tiny_vae(cfg)
    if word_encoder is None:
        word_encoder = WordEncoder(
            WordEncoderConfig(
                vocab=["<unk>", *sorted(set(vocab) - {"<unk>"})], max_positions=cfg.base.text_max_tokens
            )
        )
    adapter = adapter or ConditionAdapter(word_encoder.config.dim, cfg.base.cross_attention_dim)

    def write(tmp: Path) -> None:
        unet.save_pretrained(str(tmp / "unet"))
        vae.save_pretrained(str(tmp / "vae"))
        tiny_scheduler(prediction_type).save_pretrained(str(tmp / "scheduler"))
        word_encoder.save_pretrained(tmp / "text_encoder")
        adapter.save_pretrained(tmp / "text_adapter")
        atomic_write_text(
            tmp / "condition_config.json",
            json.dumps([{"text_encoder_name": "text_encoder", "condition_adapter_name": "text_adapter"}]),
        )

    return atomic_write_dir(path, write)
