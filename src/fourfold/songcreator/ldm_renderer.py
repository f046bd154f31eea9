"""Stage II, the paper's way: semantic tokens -> latent diffusion -> VAE decoder -> audio (App A.3, spec §2.5).

``LatentDiffusionRenderer.render(tokens (b, t), kind) -> wav (b, samples)``:

1. tokens + a stream embedding (``song|vocals|accompaniment``) -> ``(b, cond_dim, t)``, interpolated
   (nearest) to the latent frame rate and repeated over the latent's frequency rows;
2. a diffusers ``UNet2DModel`` denoises ``concat(z_t, cond)`` (token embeddings concatenated, as the
   spec reads the paper), v-prediction, cosine schedule, DPM-Solver++ (100 steps in ``paper()``), no CFG;
3. the latent is decoded by :class:`fourfold.audio.vae.MelVAE` to a log-mel, then Griffin-Lim
   (:func:`fourfold.audio.mel.griffin_lim`) gives the waveform.

Difference from the paper (stated, not hidden): the paper's VAE is a DAC-style *waveform* VAE at
44.1 kHz with GAN losses; ``fourfold.audio`` has a mel VAE and mel vocoders, so the latent here is a
mel-VAE latent. Both stages (VAE, then U-Net on frozen VAE latents) train with :func:`train_ldm_renderer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

from fourfold.audio.mel import MelConfig, griffin_lim, mel_spectrogram
from fourfold.audio.vae import MelVAE, MelVAEConfig
from fourfold.nn.modeling import PretrainedModel
from fourfold.songcreator.renderer import KINDS, _check_tokens, _kind_index

__all__ = ["LatentDiffusionRenderer", "LatentDiffusionRendererConfig", "train_ldm_renderer"]


@dataclass
class LatentDiffusionRendererConfig:
    codebook_size: int = 16384
    token_rate: float = 50.0  # tokens per second (App A.2)
    mel_per_token: int = 4  # mel frames per token
    sample_rate: int = 24000
    n_fft: int = 1024
    n_mels: int = 80
    vae_channels: tuple[int, ...] = (128, 256, 256)  # MelVAE blocks: ×4 down-sampling
    vae_layers: int = 2
    latent_channels: int = 8
    vae_kl_weight: float = 1e-4  # KL weight 1e-4 (spec §2.5, ours)
    unet_channels: tuple[int, ...] = (128, 256, 512)
    unet_layers: int = 2
    norm_groups: int = 32
    cond_dim: int = field(default=64, metadata={"help": "token-embedding channels concatenated to z_t"})
    num_train_timesteps: int = 1000
    inference_steps: int = 100  # DPM-Solver++ steps (spec §2.5)
    griffin_lim_iters: int = 32

    def __post_init__(self) -> None:
        hop = self.sample_rate / (self.token_rate * self.mel_per_token)
        if abs(hop - round(hop)) > 1e-6:
            raise ValueError(
                f"LatentDiffusionRendererConfig: sample_rate / (token_rate·mel_per_token) = {hop} "
                "must be an integer hop length"
            )
        for name in ("vae_channels", "unet_channels"):
            if any(c % self.norm_groups for c in getattr(self, name)):
                raise ValueError(
                    f"LatentDiffusionRendererConfig.{name} must be multiples of norm_groups ({self.norm_groups})"
                )
        if self.n_mels % self.vae_factor:
            raise ValueError(f"LatentDiffusionRendererConfig.n_mels must be a multiple of {self.vae_factor}")
        if self.inference_steps < 1 or self.cond_dim < 1:
            raise ValueError("LatentDiffusionRendererConfig.inference_steps and cond_dim must be >= 1")

    @property
    def hop_length(self) -> int:
        return round(self.sample_rate / (self.token_rate * self.mel_per_token))

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    def mel_config(self) -> MelConfig:
        return MelConfig(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            win_length=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            f_max=None,
            peak_norm=None,
        )

    def vae_config(self) -> MelVAEConfig:
        return MelVAEConfig(
            in_channels=1,
            latent_channels=self.latent_channels,
            block_out_channels=tuple(self.vae_channels),
            layers_per_block=self.vae_layers,
            norm_num_groups=self.norm_groups,
            scaling_factor=1.0,  # set from data by train_ldm_renderer (latent std -> 1)
            kl_weight=self.vae_kl_weight,
        )

    @classmethod
    def paper(cls) -> LatentDiffusionRendererConfig:
        return cls()

    @classmethod
    def tiny(cls, codebook_size: int = 325) -> LatentDiffusionRendererConfig:
        """16 kHz, 25 Hz tokens, 64 mels; 4-channel latent, 10 DPM-Solver++ steps (spec §4 tiny)."""
        return cls(
            codebook_size=codebook_size,
            token_rate=25.0,
            sample_rate=16000,
            n_mels=64,
            vae_channels=(16, 32, 32),
            vae_layers=1,
            latent_channels=4,
            unet_channels=(32, 64),
            unet_layers=1,
            norm_groups=8,
            cond_dim=16,
            inference_steps=10,
            griffin_lim_iters=16,
        )


class LatentDiffusionRenderer(PretrainedModel):
    """Token-conditioned latent diffusion over a mel-VAE latent (see the module docstring)."""

    config_class = LatentDiffusionRendererConfig

    def __init__(self, config: LatentDiffusionRendererConfig):
        super().__init__(config)
        from diffusers import UNet2DModel

        c = config
        self.vae = MelVAE(c.vae_config())
        # latent scale, fitted on training latents so z has ~unit variance (a buffer: saved, not trained)
        self.register_buffer("latent_scale", torch.ones(()))
        self.embed = nn.Embedding(c.codebook_size, c.cond_dim)
        self.kind = nn.Embedding(len(KINDS), c.cond_dim)
        n = len(c.unet_channels)
        self.unet = UNet2DModel(
            in_channels=c.latent_channels + c.cond_dim,
            out_channels=c.latent_channels,
            block_out_channels=tuple(c.unet_channels),
            down_block_types=("DownBlock2D",) * n,
            up_block_types=("UpBlock2D",) * n,
            layers_per_block=c.unet_layers,
            norm_num_groups=c.norm_groups,
        )

    # pieces

    def scheduler(self):
        from fourfold.diffusion import make_scheduler

        return make_scheduler(
            "dpm++",
            num_train_timesteps=self.config.num_train_timesteps,
            beta_schedule="cosine",
            prediction_type="v_prediction",
        )

    def latent_shape(self, frames: int) -> tuple[int, int, int]:
        """Latent ``(channels, rows, columns)`` for ``frames`` tokens."""
        c = self.config
        return c.latent_channels, c.n_mels // c.vae_factor, frames * c.mel_per_token // c.vae_factor

    def condition(self, tokens: torch.Tensor, kind: str, width: int, rows: int) -> torch.Tensor:
        """``(b, t)`` codes -> ``(b, cond_dim, rows, width)`` (embeddings at the latent rate)."""
        tokens = _check_tokens(tokens, self.config.codebook_size).to(self.embed.weight.device)
        h = self.embed(tokens) + self.kind.weight[_kind_index(kind)]  # (b, t, c)
        h = F.interpolate(h.transpose(1, 2), size=width, mode="nearest")  # (b, c, width)
        return repeat(h, "b c w -> b c r w", r=rows)

    def denoise(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """v-prediction for noisy latents ``z`` ``(b, C, H, W)``; pads W to the U-Net's multiple."""
        mult = 2 ** (len(self.config.unet_channels) - 1)
        w = z.shape[-1]
        pad = (-w) % mult
        x = F.pad(torch.cat([z, cond], dim=1), (0, pad))
        t = torch.as_tensor(t, device=z.device).reshape(-1).expand(z.shape[0])
        return self.unet(x, t).sample[..., :w]

    def mel_image(self, wav: torch.Tensor, frames: int) -> torch.Tensor:
        """Waveforms ``(b, samples)`` -> VAE input images ``(b, 1, n_mels, frames·mel_per_token)``."""
        from fourfold.audio.mel import mel_to_image

        mel_cfg = self.config.mel_config()
        mel = mel_spectrogram(wav, mel_cfg)
        n = frames * self.config.mel_per_token
        mel = F.pad(mel, (0, max(0, n - mel.shape[-1])), value=mel_cfg.log_min)[..., :n]
        return mel_to_image(mel, mel_cfg, channels=1)

    def encode_audio(self, wav: torch.Tensor, frames: int) -> torch.Tensor:
        """Waveforms -> scaled latents ``(b, C, H, W)`` (posterior mean)."""
        return self.vae.encode(self.mel_image(wav, frames)) / self.latent_scale

    # inference

    @torch.no_grad()
    def generate_mel(
        self, tokens: torch.Tensor, kind: str, *, seed: int = 0, steps: int | None = None
    ) -> torch.Tensor:
        """``(b, t)`` codes -> log-mel ``(b, n_mels, t·mel_per_token)`` by DPM-Solver++ sampling."""
        from fourfold.audio.mel import image_to_mel
        from fourfold.diffusion import sample

        tokens = _check_tokens(tokens, self.config.codebook_size)
        b, t = tokens.shape
        shape = (b, *self.latent_shape(t))
        cond = self.condition(tokens, kind, shape[-1], shape[-2])
        device = self.embed.weight.device
        z = sample(
            lambda x, ts, c: self.denoise(x, ts, c),
            self.scheduler(),
            [{"c": cond}],
            shape=shape,
            num_inference_steps=steps or self.config.inference_steps,
            generator=torch.Generator(device=device).manual_seed(seed),
            device=device,
        )
        image = self.vae.decode(z * self.latent_scale)
        return image_to_mel(image, self.config.mel_config())

    @torch.no_grad()
    def render(self, tokens: torch.Tensor, kind: str, *, seed: int = 0) -> torch.Tensor:
        """``(b, t)`` codes -> waveform ``(b, t·mel_per_token·hop)``."""
        mel = self.generate_mel(tokens, kind, seed=seed).float().cpu()
        return griffin_lim(mel, self.config.mel_config(), n_iter=self.config.griffin_lim_iters)


def _crops(examples, frames: int, generator: torch.Generator):
    """Random aligned crops of ``frames`` tokens: (tokens (n, frames), wav (n, samples), kinds)."""
    toks, wavs, kinds = [], [], []
    for tok, wav, kind, spt in examples:
        start = int(torch.randint(0, max(1, len(tok) - frames + 1), (1,), generator=generator))
        toks.append(tok[start : start + frames])
        wavs.append(wav[start * spt : (start + frames) * spt])
        kinds.append(kind)
    return toks, wavs, kinds


def train_ldm_renderer(
    model: LatentDiffusionRenderer,
    examples: list[tuple[torch.Tensor, torch.Tensor, str]],
    *,
    vae_steps: int = 300,
    unet_steps: int = 600,
    batch_size: int = 8,
    crop_frames: int = 25,
    learning_rate: float = 2e-3,
    seed: int = 0,
    log=None,
) -> dict[str, list[float]]:
    """Train the VAE (L1 on mel images + KL), fit the latent scale, then the U-Net (v-prediction MSE)
    on frozen latents. ``examples``: ``(tokens (T,), wav (T·samples_per_token,), kind)``; crops of
    ``crop_frames`` tokens keep CPU steps short. Returns the two loss curves."""
    from fourfold.diffusion import training_step

    c = model.config
    spt = c.mel_per_token * c.hop_length
    data = [
        (torch.as_tensor(t).long(), torch.as_tensor(w, dtype=torch.float32), k, spt) for t, w, k in examples
    ]
    for t, w, _, _ in data:
        if len(w) < len(t) * spt:
            raise ValueError(
                f"an example's audio ({len(w)} samples) is shorter than its tokens ({len(t)}·{spt})"
            )
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.train()
    vae_opt = torch.optim.Adam(model.vae.parameters(), learning_rate)
    vae_losses, unet_losses = [], []
    for step in range(vae_steps):
        idx = torch.randint(0, len(data), (batch_size,), generator=g).tolist()
        _, wavs, _ = _crops([data[i] for i in idx], crop_frames, g)
        loss, _ = model.vae(model.mel_image(torch.stack(wavs), crop_frames), generator=g)
        vae_opt.zero_grad()
        loss.backward()
        vae_opt.step()
        vae_losses.append(loss.item())
        if log and step % max(1, vae_steps // 5) == 0:
            log(f"vae step {step} loss {loss.item():.4f}")
    model.vae.requires_grad_(False)
    with torch.no_grad():
        _, wavs, _ = _crops(data[: min(len(data), 64)], crop_frames, g)
        z = model.vae.encode(model.mel_image(torch.stack(wavs), crop_frames))
        model.latent_scale.fill_(float(z.std().clamp_min(1e-4)))
    sched = model.scheduler()
    params = [*model.unet.parameters(), *model.embed.parameters(), *model.kind.parameters()]
    opt = torch.optim.Adam(params, learning_rate)
    for step in range(unet_steps):
        idx = torch.randint(0, len(data), (batch_size,), generator=g).tolist()
        toks, wavs, kinds = _crops([data[i] for i in idx], crop_frames, g)
        with torch.no_grad():
            z0 = model.encode_audio(torch.stack(wavs), crop_frames)
        # one kind per example: embed each row separately, then stack
        cond = torch.cat(
            [
                model.condition(tk[None], kd, z0.shape[-1], z0.shape[-2])
                for tk, kd in zip(toks, kinds, strict=True)
            ]
        )
        out = training_step(
            lambda x, t, cond: model.denoise(x, t, cond), sched, z0, {"cond": cond}, generator=g
        )
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        unet_losses.append(out.loss.item())
        if log and step % max(1, unet_steps // 5) == 0:
            log(f"unet step {step} loss {out.loss.item():.4f}")
    model.vae.requires_grad_(True)
    model.eval()
    return {"vae": vae_losses, "unet": unet_losses}
