"""Mel VAE: a diffusers ``AutoencoderKL`` between mel images and diffusion latents.

Images are :func:`fourfold.audio.mel.mel_to_image` outputs, ``(batch, C, n_mels, frames)`` in [-1, 1]
with C = 3 (Auffusion repeats the mel to RGB so Stable Diffusion's VAE applies) or 1. Latents are
``(batch, latent_channels, n_mels / f, frames / f)`` with ``f = 2^(len(block_out_channels) - 1)``,
multiplied by ``scaling_factor`` (Stable Diffusion's 0.18215) so they have roughly unit variance.
Training loss (ours, Draw an Audio spec §2.1): ``L1(x̂, x) + kl_weight · KL(q(z|x) ‖ N(0, I))``, with the KL
summed over latent elements and averaged over the batch, as in latent-diffusion's ``LPIPSWithDiscriminator``
without the perceptual and adversarial terms.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from fourfold.audio.mel import MelConfig, image_to_mel, mel_to_image
from fourfold.nn import CheckpointError, PretrainedModel

__all__ = ["MelVAE", "MelVAEConfig"]


@dataclass
class MelVAEConfig:
    in_channels: int = 3  # image channels: 3 (Auffusion's repeated mel) or 1
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)  # SD-1.5 VAE: ×8 down-sampling
    layers_per_block: int = 2
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215  # Stable Diffusion's latent scale
    kl_weight: float = 1e-6  # training only (ours)

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3):
            raise ValueError(f"MelVAEConfig.in_channels must be 1 or 3, got {self.in_channels}")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"MelVAEConfig.block_out_channels {self.block_out_channels} must be multiples of norm_num_groups "
                f"({self.norm_num_groups})"
            )
        if self.latent_channels < 1 or self.layers_per_block < 1 or self.scaling_factor <= 0:
            raise ValueError(
                "MelVAEConfig.latent_channels/layers_per_block must be >= 1 and scaling_factor > 0"
            )

    @classmethod
    def paper(cls) -> MelVAEConfig:
        """Stable Diffusion 1.5's VAE layout, as Auffusion reuses it (3×256×1024 -> 4×32×128)."""
        return cls()

    @classmethod
    def tiny(cls, in_channels: int = 3) -> MelVAEConfig:
        """CPU size, ×4 down-sampling (Draw an Audio tiny: 64×256 mel -> 4×16×64)."""
        return cls(
            in_channels=in_channels, block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8
        )

    @property
    def factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


def _build(config: MelVAEConfig):
    from diffusers import AutoencoderKL

    n = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=config.in_channels,
        out_channels=config.in_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        scaling_factor=config.scaling_factor,
    )


class MelVAE(PretrainedModel):
    """``AutoencoderKL`` with mel-image helpers. ``self.vae`` is the diffusers model."""

    config_class = MelVAEConfig

    def __init__(self, config: MelVAEConfig) -> None:
        super().__init__(config)
        self.vae = _build(config)

    def _check(self, image: torch.Tensor) -> None:
        c, f = self.config, self.config.factor
        if image.ndim != 4 or image.shape[1] != c.in_channels:
            raise ValueError(
                f"MelVAE expects images (batch, {c.in_channels}, n_mels, frames), got {tuple(image.shape)}"
            )
        if image.shape[2] % f or image.shape[3] % f:
            raise ValueError(
                f"MelVAE: n_mels and frames must be multiples of {f}, got {tuple(image.shape[2:])}"
            )

    def encode(
        self, image: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``(batch, C, H, W)`` -> scaled latents ``(batch, latent_channels, H/f, W/f)`` (posterior mean unless ``sample``)."""
        self._check(image)
        dist = self.vae.encode(image).latent_dist
        z = dist.sample(generator=generator) if sample else dist.mode()
        return z * self.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> image ``(batch, C, H, W)`` (not clamped)."""
        return self.vae.decode(latents / self.config.scaling_factor).sample

    def forward(self, image: torch.Tensor, generator: torch.Generator | None = None):
        """Training pass: returns ``(loss, {"l1", "kl"})`` for images ``(batch, C, H, W)``."""
        self._check(image)
        dist = self.vae.encode(image).latent_dist
        recon = self.vae.decode(dist.sample(generator=generator)).sample
        l1 = F.l1_loss(recon, image)
        kl = dist.kl().mean()  # diffusers sums over C, H, W per sample
        return l1 + self.config.kl_weight * kl, {"l1": l1.item(), "kl": kl.item()}

    def encode_mel(self, mel: torch.Tensor, mel_cfg: MelConfig, sample: bool = False) -> torch.Tensor:
        """ln-mel ``(batch, n_mels, frames)`` -> latents (via :func:`mel_to_image`)."""
        return self.encode(mel_to_image(mel, mel_cfg, channels=self.config.in_channels), sample=sample)

    def decode_mel(self, latents: torch.Tensor, mel_cfg: MelConfig) -> torch.Tensor:
        """Latents -> ln-mel ``(batch, n_mels, frames)`` (via :func:`image_to_mel`, channels averaged)."""
        return image_to_mel(self.decode(latents), mel_cfg)

    @classmethod
    def from_diffusers(cls, directory: str | Path) -> MelVAE:
        """Load a diffusers ``AutoencoderKL`` directory (e.g. Auffusion's ``vae/``) from local disk."""
        from diffusers import AutoencoderKL

        directory = Path(directory)
        cfg_path = directory / "config.json"
        if not cfg_path.is_file():
            raise CheckpointError(f"VAE: missing file {cfg_path}")
        raw = json.loads(cfg_path.read_text())
        if any(t != "DownEncoderBlock2D" for t in raw.get("down_block_types", [])):
            raise CheckpointError(
                f"{cfg_path}: only DownEncoderBlock2D/UpDecoderBlock2D AutoencoderKL layouts are supported"
            )
        try:
            config = MelVAEConfig(
                in_channels=raw.get("in_channels", 3),
                latent_channels=raw.get("latent_channels", 4),
                block_out_channels=tuple(raw.get("block_out_channels", (64,))),
                layers_per_block=raw.get("layers_per_block", 1),
                norm_num_groups=raw.get("norm_num_groups", 32),
                scaling_factor=raw.get("scaling_factor", 0.18215),
            )
            loaded = AutoencoderKL.from_pretrained(
                str(directory), local_files_only=True, torch_dtype=torch.float32
            )
        except (OSError, ValueError) as err:
            raise CheckpointError(f"cannot load AutoencoderKL from {directory}: {err}") from err
        model = cls(config)
        model.vae.load_state_dict(loaded.state_dict())
        return model
