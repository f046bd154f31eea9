"""Stage II, the paper's way: semantic tokens -> latent diffusion -> VAE decoder -> audio (App A.3, spec §2.5).

``LatentDiffusionRenderer.render(tokens (b, t), kind) -> wav (b, samples)``:

1. tokens + a stream embedding (``song|vocals|accompaniment``) -> ``(b, cond_dim, t)``, interpolated
   (nearest) to the latent frame rate (and, for a mel latent, repeated over its frequency rows);
2. a diffusers U-Net denoises ``concat(z_t, cond)`` (token embeddings concatenated, as the spec reads the
   paper), v-prediction, cosine schedule, DPM-Solver++ (100 steps in ``paper()``), no CFG;
3. the latent is decoded to audio by one of two VAEs:
   - **waveform** (the paper's): :class:`fourfold.audio.waveform_vae.WaveformVAE`, a DAC-style VAE whose
     latent is ``(latent_dim, frames)`` at ``sample_rate / hop`` frames/s; the U-Net is a 1-D
     ``UNet1DModel`` (Stable Audio 1.0's U-Net is 1-D too) and the decoder gives the waveform directly;
   - **mel** (``waveform_vae=None``): :class:`fourfold.audio.vae.MelVAE` on a log-mel image, a 2-D
     ``UNet2DModel``, and Griffin-Lim (:func:`fourfold.audio.mel.griffin_lim`) from the decoded mel.

Training (:func:`train_ldm_renderer`) is two stages as the paper's: the VAE, then the U-Net on frozen VAE
latents scaled to unit standard deviation. The waveform VAE's GAN training lives in
:func:`fourfold.audio.waveform_vae.train_waveform_vae`; load its weights into ``renderer.vae`` and call
:func:`train_ldm_renderer` with ``vae_steps=0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

from fourfold.audio.mel import MelConfig, griffin_lim, mel_spectrogram
from fourfold.audio.vae import MelVAE, MelVAEConfig
from fourfold.audio.waveform_vae import WaveformVAE, WaveformVAEConfig
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
    # the paper's DAC-style waveform VAE; None = the mel VAE + Griffin-Lim path (the mel fields above then
    # define the VAE's input; with a waveform VAE they define only the mel of generate_mel and the metrics)
    waveform_vae: WaveformVAEConfig | None = None

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
        if self.waveform_vae is not None and self.waveform_vae.sample_rate != self.sample_rate:
            raise ValueError(
                f"LatentDiffusionRendererConfig.waveform_vae.sample_rate ({self.waveform_vae.sample_rate}) "
                f"must equal sample_rate ({self.sample_rate})"
            )

    @property
    def hop_length(self) -> int:
        return round(self.sample_rate / (self.token_rate * self.mel_per_token))

    @property
    def samples_per_token(self) -> int:
        return self.mel_per_token * self.hop_length

    def latent_frames(self, frames: int) -> int:
        """Latent frames for ``frames`` tokens (mel: ``frames·mel_per_token / factor``; waveform:
        ``frames · samples_per_token / hop``, rounded up so the decoded audio covers every token)."""
        if self.waveform_vae is None:
            return frames * self.mel_per_token // self.vae_factor
        return math.ceil(frames * self.samples_per_token / self.waveform_vae.hop_length)

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
    def paper(cls, vae: str = "waveform") -> LatentDiffusionRendererConfig:
        """App A.3: 44.1 kHz audio from the DAC-style waveform VAE (``vae="waveform"``, 1024×, 32-d latent),
        50 Hz tokens, 100 DPM-Solver++ steps; ``vae="mel"`` gives the earlier 24 kHz mel-VAE variant."""
        if vae == "mel":
            return cls()
        if vae != "waveform":
            raise ValueError(f"vae must be 'waveform' or 'mel', got {vae!r}")
        # mel fields: only the mel of generate_mel (44100 / (50·3) = hop 294)
        return cls(sample_rate=44100, mel_per_token=3, n_fft=2048, waveform_vae=WaveformVAEConfig.paper())

    @classmethod
    def tiny(cls, codebook_size: int = 325, vae: str = "mel") -> LatentDiffusionRendererConfig:
        """16 kHz, 25 Hz tokens, 64 mels, 10 DPM-Solver++ steps (spec §4 tiny). ``vae="mel"``: a 4-channel
        mel-VAE latent; ``vae="waveform"``: the tiny waveform VAE (64×, 8-d latent, 250 frames/s)."""
        if vae not in ("mel", "waveform"):
            raise ValueError(f"vae must be 'waveform' or 'mel', got {vae!r}")
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
            waveform_vae=WaveformVAEConfig.tiny() if vae == "waveform" else None,
        )


class LatentDiffusionRenderer(PretrainedModel):
    """Token-conditioned latent diffusion over a waveform-VAE or mel-VAE latent (see the module docstring).

    Latents are ``(b, latent_dim, frames)`` (waveform VAE) or ``(b, C, n_mels/f, frames)`` (mel VAE)."""

    config_class = LatentDiffusionRendererConfig

    def __init__(self, config: LatentDiffusionRendererConfig):
        super().__init__(config)
        from diffusers import UNet1DModel, UNet2DModel

        c = config
        # latent scale, fitted on training latents so z has ~unit variance (a buffer: saved, not trained)
        self.register_buffer("latent_scale", torch.ones(()))
        self.embed = nn.Embedding(c.codebook_size, c.cond_dim)
        self.kind = nn.Embedding(len(KINDS), c.cond_dim)
        n = len(c.unet_channels)
        if c.waveform_vae is not None:
            self.vae = WaveformVAE(c.waveform_vae)
            self.unet = UNet1DModel(
                in_channels=c.waveform_vae.latent_dim + c.cond_dim,
                out_channels=c.waveform_vae.latent_dim,
                extra_in_channels=0,
                block_out_channels=tuple(c.unet_channels),
                down_block_types=("DownResnetBlock1D",) * n,
                up_block_types=("UpResnetBlock1D",) * (n - 1),
                mid_block_type="MidResTemporalBlock1D",
                out_block_type="OutConv1DBlock",
                time_embedding_type="positional",
                use_timestep_embedding=True,
                flip_sin_to_cos=False,
                freq_shift=1.0,
                act_fn="mish",
                layers_per_block=c.unet_layers,
                norm_num_groups=c.norm_groups,
            )
        else:
            self.vae = MelVAE(c.vae_config())
            self.unet = UNet2DModel(
                in_channels=c.latent_channels + c.cond_dim,
                out_channels=c.latent_channels,
                block_out_channels=tuple(c.unet_channels),
                down_block_types=("DownBlock2D",) * n,
                up_block_types=("UpBlock2D",) * n,
                layers_per_block=c.unet_layers,
                norm_num_groups=c.norm_groups,
            )

    @property
    def waveform(self) -> bool:
        """True when the latent is the waveform VAE's (decoded straight to audio, no Griffin-Lim)."""
        return self.config.waveform_vae is not None

    # pieces

    def scheduler(self):
        from fourfold.diffusion import make_scheduler

        return make_scheduler(
            "dpm++",
            num_train_timesteps=self.config.num_train_timesteps,
            beta_schedule="cosine",
            prediction_type="v_prediction",
        )

    def latent_shape(self, frames: int) -> tuple[int, ...]:
        """Latent shape without the batch for ``frames`` tokens: ``(latent_dim, latent frames)`` (waveform)
        or ``(channels, rows, columns)`` (mel)."""
        c = self.config
        if self.waveform:
            return c.waveform_vae.latent_dim, c.latent_frames(frames)
        return c.latent_channels, c.n_mels // c.vae_factor, c.latent_frames(frames)

    def condition(self, tokens: torch.Tensor, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        """``(b, t)`` codes -> ``(b, cond_dim, *shape[1:])``: embeddings at the latent rate (repeated over
        the rows of a mel latent). ``shape`` is :meth:`latent_shape`'s."""
        tokens = _check_tokens(tokens, self.config.codebook_size).to(self.embed.weight.device)
        h = self.embed(tokens) + self.kind.weight[_kind_index(kind)]  # (b, t, c)
        h = F.interpolate(h.transpose(1, 2), size=shape[-1], mode="nearest")  # (b, c, width)
        return h if len(shape) == 2 else repeat(h, "b c w -> b c r w", r=shape[1])

    def denoise(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """v-prediction for noisy latents ``z``; pads the time axis to the U-Net's multiple."""
        mult = 2 ** (len(self.config.unet_channels) - 1)
        w = z.shape[-1]
        pad = (-w) % mult
        x = F.pad(torch.cat([z, cond], dim=1), (0, pad))
        t = torch.as_tensor(t, device=z.device).reshape(-1).expand(z.shape[0])
        return self.unet(x, t).sample[..., :w]

    def crop_audio(self, wav: torch.Tensor, frames: int) -> torch.Tensor:
        """Waveforms ``(b, samples)`` cut or zero-padded to what ``frames`` tokens' latent decodes to."""
        n = self.config.latent_frames(frames) * self.config.waveform_vae.hop_length
        return F.pad(wav, (0, max(0, n - wav.shape[-1])))[..., :n]

    def mel_image(self, wav: torch.Tensor, frames: int) -> torch.Tensor:
        """Waveforms ``(b, samples)`` -> mel-VAE input images ``(b, 1, n_mels, frames·mel_per_token)``."""
        from fourfold.audio.mel import mel_to_image

        mel_cfg = self.config.mel_config()
        mel = mel_spectrogram(wav, mel_cfg)
        n = frames * self.config.mel_per_token
        mel = F.pad(mel, (0, max(0, n - mel.shape[-1])), value=mel_cfg.log_min)[..., :n]
        return mel_to_image(mel, mel_cfg, channels=1)

    def encode_unscaled(self, wav: torch.Tensor, frames: int) -> torch.Tensor:
        """Waveforms -> VAE posterior means (before the latent scale)."""
        if self.waveform:
            return self.vae.encode(self.crop_audio(wav, frames))[0]
        return self.vae.encode(self.mel_image(wav, frames))

    def encode_audio(self, wav: torch.Tensor, frames: int) -> torch.Tensor:
        """Waveforms -> scaled latents (posterior mean), the U-Net's data."""
        return self.encode_unscaled(wav, frames) / self.latent_scale

    # inference

    @torch.no_grad()
    def generate_latent(
        self, tokens: torch.Tensor, kind: str, *, seed: int = 0, steps: int | None = None
    ) -> torch.Tensor:
        """``(b, t)`` codes -> unscaled VAE latents by seeded DPM-Solver++ sampling."""
        from fourfold.diffusion import sample

        tokens = _check_tokens(tokens, self.config.codebook_size)
        b, t = tokens.shape
        shape = self.latent_shape(t)
        cond = self.condition(tokens, kind, shape)
        device = self.embed.weight.device
        z = sample(
            lambda x, ts, c: self.denoise(x, ts, c),
            self.scheduler(),
            [{"c": cond}],
            shape=(b, *shape),
            num_inference_steps=steps or self.config.inference_steps,
            generator=torch.Generator(device=device).manual_seed(seed),
            device=device,
        )
        return z * self.latent_scale

    @torch.no_grad()
    def generate_mel(
        self, tokens: torch.Tensor, kind: str, *, seed: int = 0, steps: int | None = None
    ) -> torch.Tensor:
        """``(b, t)`` codes -> log-mel ``(b, n_mels, t·mel_per_token)`` (of the decoded audio for a waveform
        latent)."""
        from fourfold.audio.mel import image_to_mel

        z = self.generate_latent(tokens, kind, seed=seed, steps=steps)
        cfg = self.config.mel_config()
        if self.waveform:
            n = tokens.shape[-1] * self.config.samples_per_token
            return mel_spectrogram(self.vae.decode(z)[..., :n].float(), cfg)
        return image_to_mel(self.vae.decode(z), cfg)

    @torch.no_grad()
    def render(self, tokens: torch.Tensor, kind: str, *, seed: int = 0) -> torch.Tensor:
        """``(b, t)`` codes -> waveform ``(b, t·samples_per_token)``: the waveform VAE's decoder output, or
        Griffin-Lim from the mel VAE's log-mel."""
        if self.waveform:
            z = self.generate_latent(tokens, kind, seed=seed)
            return self.vae.decode(z)[..., : tokens.shape[-1] * self.config.samples_per_token].float().cpu()
        mel = self.generate_mel(tokens, kind, seed=seed).float().cpu()
        return griffin_lim(mel, self.config.mel_config(), n_iter=self.config.griffin_lim_iters)


def _crops(examples, frames: int, generator: torch.Generator):
    """Random aligned crops of ``frames`` tokens: (tokens (n, frames), wav (n, samples), kinds, starts)."""
    toks, wavs, kinds, starts = [], [], [], []
    for tok, wav, kind, spt in examples:
        start = int(torch.randint(0, max(1, len(tok) - frames + 1), (1,), generator=generator))
        toks.append(tok[start : start + frames])
        wavs.append(wav[start * spt : (start + frames) * spt])
        kinds.append(kind)
        starts.append(start)
    return toks, wavs, kinds, starts


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
    """Train the VAE (mel VAE: L1 on mel images + KL; waveform VAE: multi-resolution mel L1 + KL, no GAN),
    fit the latent scale, then the U-Net (v-prediction MSE)
    on frozen latents. ``examples``: ``(tokens (T,), wav (T·samples_per_token,), kind)``; crops of
    ``crop_frames`` tokens keep CPU steps short. Returns the two loss curves."""
    from fourfold.diffusion import training_step

    c = model.config
    spt = c.samples_per_token
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
        _, wavs, _, _ = _crops([data[i] for i in idx], crop_frames, g)
        if model.waveform:  # reconstruction terms only (mel L1 + KL); the GAN stage is train_waveform_vae's
            loss, _ = model.vae(model.crop_audio(torch.stack(wavs), crop_frames), generator=g)
        else:
            loss, _ = model.vae(model.mel_image(torch.stack(wavs), crop_frames), generator=g)
        vae_opt.zero_grad()
        loss.backward()
        vae_opt.step()
        vae_losses.append(loss.item())
        if log and step % max(1, vae_steps // 5) == 0:
            log(f"vae step {step} loss {loss.item():.4f}")
    model.vae.requires_grad_(False)
    with torch.no_grad():
        _, wavs, _, _ = _crops(data[: min(len(data), 64)], crop_frames, g)
        z = model.encode_unscaled(torch.stack(wavs), crop_frames)
        model.latent_scale.fill_(float(z.std().clamp_min(1e-4)))
        # the encoder is frozen and convolutional: with a whole number of latent frames per token, encode
        # each clip once and crop its latent (instead of encoding every crop at every step)
        per_token = c.samples_per_token / c.waveform_vae.hop_length if model.waveform else 0.0
        cached = (
            [model.encode_unscaled(w[None], len(t))[0] for t, w, _, _ in data]
            if model.waveform and per_token.is_integer()
            else None
        )
    sched = model.scheduler()
    params = [*model.unet.parameters(), *model.embed.parameters(), *model.kind.parameters()]
    opt = torch.optim.Adam(params, learning_rate)
    for step in range(unet_steps):
        idx = torch.randint(0, len(data), (batch_size,), generator=g).tolist()
        toks, wavs, kinds, starts = _crops([data[i] for i in idx], crop_frames, g)
        with torch.no_grad():
            if cached is not None:
                k, n = int(per_token), crop_frames * int(per_token)
                z0 = torch.stack([cached[i][:, s * k : s * k + n] for i, s in zip(idx, starts, strict=True)])
                z0 = z0 / model.latent_scale
            else:
                z0 = model.encode_audio(torch.stack(wavs), crop_frames)
        # one kind per example: embed each row separately, then stack
        cond = torch.cat(
            [model.condition(tk[None], kd, tuple(z0.shape[1:])) for tk, kd in zip(toks, kinds, strict=True)]
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
