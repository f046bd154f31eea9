"""Text-to-image model directories SaRA fine-tunes: Stable Diffusion 1.x/2.x, SDXL and SD3 (spec §2, §4).

``load_parts(dir)`` reads a local diffusers directory, picks the kind from ``model_index.json`` and returns
the denoiser to wrap plus a frozen ``encode(texts)`` and a ``loss(model, pixels, texts)``:

* SD1.x/2.x (``StableDiffusionPipeline``): as diffusers' ``train_text_to_image.py`` — latents =
  VAE(x)·scaling_factor, t ~ U{0..T−1}, target ε or v per the scheduler's ``prediction_type``, fp32 MSE.
* SDXL (``StableDiffusionXLPipeline``): the same loss with both text encoders (penultimate states
  concatenated, pooled projection of the second) and ``time_ids`` = (h, w, 0, 0, h, w), as
  ``train_text_to_image_sdxl.py`` without crops.
* SD3 (``StableDiffusion3Pipeline``, our choice; the paper gives no SD3 recipe): rectified flow as
  ``train_dreambooth_sd3.py`` with uniform σ — x_σ = (1 − σ)·x0 + σ·ε, timestep = σ·T, target ε − x0,
  latents = (VAE(x) − shift_factor)·scaling_factor. Missing T5 (``text_encoder_3``) is allowed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

KINDS = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
}
SD3_MAX_T5_TOKENS = 77  # T5 context used for SD3 training prompts (diffusers' SD3 training scripts)


def pipeline_kind(model_dir: str | Path) -> str:
    """``"sd"``, ``"sdxl"`` or ``"sd3"`` from ``model_index.json``; a clear error for anything else."""
    index = Path(model_dir) / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{model_dir}: not a diffusers model directory (no model_index.json)")
    name = json.loads(index.read_text()).get("_class_name", "")
    if name not in KINDS:
        raise ValueError(f"{model_dir}: pipeline {name!r} is not supported; expected one of {sorted(KINDS)}")
    return KINDS[name]


def load_pipeline(model_dir: str | Path):
    """The diffusers pipeline of ``model_dir`` in fp32, without safety checker; returns (pipe, kind)."""
    import diffusers

    kind = pipeline_kind(model_dir)
    cls = getattr(diffusers, next(k for k, v in KINDS.items() if v == kind))
    index = json.loads((Path(model_dir) / "model_index.json").read_text())
    # components saved as null or not saved at all (SD3 without T5, no image encoder) are passed as None
    expected, _ = cls._get_signature_keys(cls)
    extra = {k: None for k in expected if index.get(k) in (None, [None, None])}
    if kind == "sd":
        extra.update(safety_checker=None, requires_safety_checker=False)
    pipe = cls.from_pretrained(model_dir, dtype=torch.float32, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe, kind


def denoiser_of(pipe) -> nn.Module:
    """The network SaRA wraps: ``pipe.unet`` (SD, SDXL) or ``pipe.transformer`` (SD3)."""
    return pipe.transformer if getattr(pipe, "transformer", None) is not None else pipe.unet


@dataclass
class TextToImageParts:
    """A loaded model directory, ready for fine-tuning its denoiser (text encoders and VAE frozen)."""

    kind: str
    pipe: object
    denoiser: nn.Module
    scheduler: object  # DDPM view of the training noise schedule (sd, sdxl) or the flow-matching one (sd3)
    resolution: int  # default training resolution in pixels: sample_size × VAE factor
    encode: Callable[[list[str], torch.device], dict]  # texts → the denoiser's conditioning kwargs

    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images ``(batch, 3, h, w)`` in [−1, 1] → scaled VAE latents ``(batch, c, h/f, w/f)``."""
        vae = self.pipe.vae.to(pixels.device)
        z = vae.encode(pixels).latent_dist.sample()
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (z - shift) * vae.config.scaling_factor

    def loss(self, model: nn.Module, pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """The denoising loss of ``model`` on one batch (fp32 mean squared error)."""
        for name in ("vae", "text_encoder", "text_encoder_2", "text_encoder_3"):  # follow the batch's device
            module = getattr(self.pipe, name, None)
            if module is not None and module.device != pixels.device:
                module.to(pixels.device)
        with torch.no_grad():
            latents = self.latents(pixels)
            cond = self.encode(list(texts), pixels.device)
        if self.kind != "sd3":
            from fourfold.diffusion.training import training_step

            return training_step(model, self.scheduler, latents, cond).loss
        noise = torch.randn_like(latents)
        sigma = torch.rand(latents.shape[0], device=latents.device)
        s = sigma.view(-1, *([1] * (latents.ndim - 1)))
        noisy = (1.0 - s) * latents + s * noise
        timestep = sigma * self.scheduler.config.num_train_timesteps
        pred = model(hidden_states=noisy, timestep=timestep, **cond).sample
        return F.mse_loss(pred.float(), (noise - latents).float())


def load_parts(model_dir: str | Path) -> TextToImageParts:
    """Load SD1.x/2.x, SDXL or SD3 from a local diffusers directory (see the module docstring)."""
    from fourfold.diffusion.schedulers import make_scheduler

    pipe, kind = load_pipeline(model_dir)
    for name in ("vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False).eval()
    denoiser = denoiser_of(pipe)
    vae_factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    resolution = (
        int(denoiser.config.sample_size) * vae_factor
    )  # sample_size counts latent pixels for all three

    if kind == "sd3":
        sched = pipe.scheduler

        def encode(texts: list[str], device: torch.device) -> dict:
            embeds, _, pooled, _ = pipe.encode_prompt(prompt=texts, prompt_2=None, prompt_3=None, device=device,
                                                      do_classifier_free_guidance=False,
                                                      max_sequence_length=SD3_MAX_T5_TOKENS)  # fmt: skip
            return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    else:
        sched = make_scheduler("ddpm", source=dict(pipe.scheduler.config))

        if kind == "sd":

            def encode(texts: list[str], device: torch.device) -> dict:
                embeds, _ = pipe.encode_prompt(texts, device, 1, False)
                return {"encoder_hidden_states": embeds}

        else:

            def encode(texts: list[str], device: torch.device) -> dict:
                embeds, _, pooled, _ = pipe.encode_prompt(prompt=texts, device=device, num_images_per_prompt=1,
                                                          do_classifier_free_guidance=False)  # fmt: skip
                # (original h, w, crop top, left, target h, w): no crop, trained at the resolution
                ids = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], dtype=embeds.dtype)
                ids = ids.to(device).repeat(len(texts), 1)
                return {"encoder_hidden_states": embeds,
                        "added_cond_kwargs": {"text_embeds": pooled, "time_ids": ids}}  # fmt: skip

    return TextToImageParts(kind, pipe, denoiser, sched, resolution, encode)
