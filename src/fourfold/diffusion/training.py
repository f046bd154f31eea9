"""The latent-diffusion training step shared by Draw an Audio, SongCreator's renderer and the SaRA demos.

Forward process (DDPM, Ho et al. 2020, Eq. 4): ``z_t = sqrt(ᾱ_t)·z_0 + sqrt(1 - ᾱ_t)·ε`` with ᾱ from the
scheduler's ``alphas_cumprod``. Targets by ``prediction_type``:

- ``"epsilon"``: ``ε`` (Ho et al. 2020);
- ``"v_prediction"``: ``v = sqrt(ᾱ_t)·ε - sqrt(1 - ᾱ_t)·z_0`` (Salimans & Ho 2022, §4);
- ``"sample"``: ``z_0``.

Loss: mean squared error over every element (Draw an Audio spec §2.5), optionally per-sample weighted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch.nn import functional as F

__all__ = [
    "DiffusionStepOutput",
    "add_noise",
    "call_model",
    "diffusion_target",
    "min_snr_weights",
    "snr",
    "training_step",
]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass
class DiffusionStepOutput:
    """Everything one training step computed; ``loss`` is a scalar, the rest are ``latents``-shaped
    except ``timesteps`` ``(batch,)``."""

    loss: torch.Tensor
    prediction: torch.Tensor
    target: torch.Tensor
    noisy_latents: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor


def _alphas(scheduler, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sqrt(ᾱ_t)`` and ``sqrt(1 - ᾱ_t)`` shaped ``(batch, 1, ...)`` to broadcast over ``like``."""
    if not hasattr(scheduler, "alphas_cumprod"):
        raise TypeError(f"{type(scheduler).__name__} has no alphas_cumprod; use a DDPM-family scheduler")
    abar = scheduler.alphas_cumprod.to(device=like.device, dtype=torch.float32)[timesteps.long()]
    abar = abar.reshape(-1, *([1] * (like.ndim - 1)))
    return abar.sqrt().to(like.dtype), (1.0 - abar).sqrt().to(like.dtype)


def add_noise(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """``z_t = sqrt(ᾱ_t)·z_0 + sqrt(1-ᾱ_t)·ε`` for ``latents`` ``(batch, ...)`` and ``timesteps`` ``(batch,)``."""
    a, s = _alphas(scheduler, timesteps, latents)
    return a * latents + s * noise


def diffusion_target(
    scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """The regression target for ``prediction_type`` (see the module docstring)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return latents
    if prediction_type == "v_prediction":
        a, s = _alphas(scheduler, timesteps, latents)
        return a * noise - s * latents
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ``ᾱ_t / (1 - ᾱ_t)`` per timestep, ``(batch,)`` float32."""
    abar = scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float64)[timesteps.long()]
    return (abar / (1.0 - abar)).float()


def min_snr_weights(
    scheduler, timesteps: torch.Tensor, prediction_type: str, gamma: float = 5.0
) -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023, arXiv 2303.09556, Eq. 7 and Table 1), ``(batch,)``.

    The x0-space weight ``min(SNR, γ)`` expressed for each target: ε → ``min(SNR, γ)/SNR``;
    v → ``min(SNR, γ)/(SNR + 1)``; x0 → ``min(SNR, γ)``. Pass the result as ``training_step(weights=...)``.
    """
    ratio = snr(scheduler, timesteps)
    clipped = ratio.clamp(max=gamma)
    if prediction_type == "epsilon":
        return clipped / ratio
    if prediction_type == "v_prediction":
        return clipped / (ratio + 1.0)
    if prediction_type == "sample":
        return clipped
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def call_model(
    model: Callable, x: torch.Tensor, t: torch.Tensor, cond: Mapping[str, Any] | None
) -> torch.Tensor:
    """``model(x, t, **cond)`` returning a tensor, whether the model returns a tensor, a tuple or an
    object with ``.sample`` (diffusers ``UNet2DConditionOutput``)."""
    out = model(x, t, **(cond or {}))
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, tuple | list):
        return out[0]
    return out


def training_step(
    model: Callable,
    scheduler,
    latents: torch.Tensor,
    cond: Mapping[str, Any] | None = None,
    *,
    prediction_type: str | None = None,
    timesteps: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    weights: torch.Tensor | None = None,
) -> DiffusionStepOutput:
    """One denoising-loss evaluation.

    ``model(z_t, t, **cond)`` is any denoiser (a diffusers UNet takes ``encoder_hidden_states=``,
    ``cross_attention_kwargs=`` ... through ``cond``); ``latents`` ``(batch, ...)`` are clean ``z_0``.
    ``t ~ U{0, ..., T-1}`` and ``ε ~ N(0, I)`` are drawn from ``generator`` unless given.
    ``prediction_type`` defaults to the scheduler's. ``weights`` ``(batch,)`` weight each sample's mean
    squared error (e.g. min-SNR); without them the loss is the plain element mean.
    """
    prediction_type = prediction_type or scheduler.config.prediction_type
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    batch = latents.shape[0]
    if noise is None:
        noise = torch.randn(
            latents.shape, generator=generator, device=generator.device if generator else "cpu"
        )
        noise = noise.to(device=latents.device, dtype=latents.dtype)
    elif noise.shape != latents.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} differs from latents {tuple(latents.shape)}")
    if timesteps is None:
        num_train = int(scheduler.config.num_train_timesteps)
        timesteps = torch.randint(
            0, num_train, (batch,), generator=generator, device=generator.device if generator else "cpu"
        )
    timesteps = timesteps.to(latents.device).long()
    if timesteps.shape != (batch,):
        raise ValueError(f"timesteps must have shape ({batch},), got {tuple(timesteps.shape)}")
    noisy = add_noise(scheduler, latents, noise, timesteps)
    prediction = call_model(model, noisy, timesteps, cond)
    target = diffusion_target(scheduler, latents, noise, timesteps, prediction_type)
    if prediction.shape != target.shape:
        raise ValueError(
            f"model output {tuple(prediction.shape)} does not match the target {tuple(target.shape)}"
        )
    if weights is None:
        loss = F.mse_loss(prediction.float(), target.float())
    else:
        per_sample = rearrange((prediction.float() - target.float()).square(), "b ... -> b (...)").mean(dim=1)
        loss = (per_sample * weights.to(per_sample)).mean()
    return DiffusionStepOutput(loss, prediction, target, noisy, noise, timesteps)
