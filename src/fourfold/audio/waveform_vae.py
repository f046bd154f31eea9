"""DAC-style waveform VAE: a convolutional encoder from the waveform to a Gaussian latent and a decoder back
to the waveform, trained with multi-resolution mel L1, feature matching, adversarial and KL losses.

SongCreator's renderer (App A.3) decodes its diffusion latents with such a VAE: "DAC-style", 44.1 kHz,
encoder strides [4, 4, 8, 8] (1024× down-sampling, ≈43.07 latent frames/s), d_model 128, 64 encoder
outputs that are the mean and log-variance of a 32-d latent, decoder strides [8, 8, 4, 4] with width 1536;
losses mel L1 ×15, feature matching ×2, adversarial ×1 with MPD and multi-band multi-resolution STFT
discriminators (:class:`fourfold.audio.gan.DACDiscriminator`), KL ×1e-4 (the KL weight is ours, spec §2.5).

Layout after DAC (Kumar et al. 2023, arXiv 2306.06546, §3 and its public code):
- residual unit: Snake → 7-tap conv (dilation 1, 3 or 9) → Snake → 1×1 conv, added to the input;
- encoder block (stride s, width c): three residual units at c/2, Snake, strided conv (kernel 2s) to c;
- encoder: 7-tap conv to d_model, one block per stride doubling the width, Snake, 3-tap conv to 2·latent;
- decoder block: Snake, transposed conv (kernel 2s) halving the width, three residual units;
- decoder: 7-tap conv from the latent to ``decoder_dim``, one block per stride, Snake, 7-tap conv to 1, tanh
  (``remove_dc``, ours, subtracts the clip's mean before the tanh);
- every convolution is weight-normalised; Snake is ``x + sin²(αx)/α`` with a learned α per channel.

Shapes: waveforms ``(batch, samples)`` with samples a multiple of ``hop_length``; latents
``(batch, latent_dim, samples / hop_length)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from fourfold.audio.mel import MelConfig, mel_spectrogram
from fourfold.nn import PretrainedModel

__all__ = [
    "Snake",
    "WaveformVAE",
    "WaveformVAEConfig",
    "WaveformVAETraining",
    "multi_resolution_mel_l1",
    "train_waveform_vae",
]


@dataclass
class WaveformVAEConfig:
    sample_rate: int = 44100  # Hz (App A.3)
    d_model: int = 128  # encoder width after the first conv; doubles per stride block (App A.3)
    encoder_strides: tuple[int, ...] = (4, 4, 8, 8)  # 1024× down-sampling (App A.3)
    latent_dim: int = 32  # the encoder emits 2·latent_dim = 64 channels: mean and log-variance (App A.3)
    decoder_dim: int = 1536  # decoder width after its first conv; halves per stride block (App A.3)
    decoder_strides: tuple[int, ...] = (8, 8, 4, 4)  # (App A.3)
    # multi-resolution mel loss (DAC's: window w, hop w/4, a mel band count per window); ours for tiny
    mel_windows: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
    mel_bins: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320)
    mel_weight: float = 15.0  # λ_mel (App A.3)
    fm_weight: float = 2.0  # λ_fm (App A.3)
    adv_weight: float = 1.0  # λ_adv (App A.3)
    kl_weight: float = field(default=1e-4, metadata={"help": "KL(q(z|x) ‖ N(0, I)) weight (ours, spec §2.5)"})
    # ours: subtract each clip's time-mean from the decoder's pre-tanh output. The mel losses barely see DC,
    # and in a mel-L1 warm-up (before any waveform discriminator) our first tiny run drifted to a 0.87 DC
    # offset that saturated the tanh; DAC (GAN from step 0) has no such step, so paper() keeps it off
    remove_dc: bool = False

    def __post_init__(self) -> None:
        for name in ("encoder_strides", "decoder_strides"):
            strides = getattr(self, name)
            if not strides or any(s < 2 or s % 2 for s in strides):
                raise ValueError(f"WaveformVAEConfig.{name} must be even integers >= 2, got {strides}")
        if math.prod(self.encoder_strides) != math.prod(self.decoder_strides):
            raise ValueError(
                "WaveformVAEConfig.encoder_strides and decoder_strides must have the same product, got "
                f"{self.encoder_strides} and {self.decoder_strides}"
            )
        for name in ("sample_rate", "d_model", "latent_dim", "decoder_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"WaveformVAEConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.decoder_dim % 2 ** len(self.decoder_strides):
            raise ValueError(
                f"WaveformVAEConfig.decoder_dim ({self.decoder_dim}) must be divisible by "
                f"2^{len(self.decoder_strides)} (it halves per block)"
            )
        if len(self.mel_windows) != len(self.mel_bins) or not self.mel_windows:
            raise ValueError("WaveformVAEConfig.mel_windows and mel_bins must be non-empty and equally long")
        if any(w < 8 or w % 4 for w in self.mel_windows):
            raise ValueError(
                f"WaveformVAEConfig.mel_windows must be multiples of 4 >= 8, got {self.mel_windows}"
            )
        if min(self.mel_weight, self.fm_weight, self.adv_weight, self.kl_weight) < 0:
            raise ValueError("WaveformVAEConfig loss weights must be >= 0")

    @property
    def hop_length(self) -> int:
        """Samples per latent frame (the product of the strides)."""
        return math.prod(self.encoder_strides)

    @property
    def frame_rate(self) -> float:
        """Latent frames per second (44100 / 1024 ≈ 43.07 in ``paper()``)."""
        return self.sample_rate / self.hop_length

    def mel_configs(self) -> list[MelConfig]:
        """The mel front ends of the reconstruction loss (no peak normalisation: loudness errors count)."""
        return [
            MelConfig(
                sample_rate=self.sample_rate,
                n_fft=w,
                win_length=w,
                hop_length=w // 4,
                n_mels=m,
                f_max=None,
                peak_norm=None,
            )
            for w, m in zip(self.mel_windows, self.mel_bins, strict=True)
        ]

    @classmethod
    def paper(cls) -> WaveformVAEConfig:
        """SongCreator App A.3: 44.1 kHz, strides 4·4·8·8, d_model 128, 32-d latent, decoder width 1536."""
        return cls()

    @classmethod
    def tiny(cls) -> WaveformVAEConfig:
        """Spec §4 tiny: 16 kHz, 64× down-sampling (250 latent frames/s), an 8-d latent; narrow layers."""
        return cls(
            sample_rate=16000,
            d_model=16,
            encoder_strides=(2, 4, 8),
            latent_dim=8,
            decoder_dim=128,
            decoder_strides=(8, 4, 2),
            mel_windows=(64, 256, 1024),
            mel_bins=(16, 40, 64),
            remove_dc=True,
        )


class Snake(nn.Module):
    """Snake activation ``x + sin²(αx) / α`` with one learned α per channel (inputs ``(batch, channels, time)``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


def _wn_conv(cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1) -> nn.Module:
    # "same" padding for odd kernels; the strided ones (kernel 2s) pad ceil(s/2) so T -> T/s exactly
    pad = math.ceil(stride / 2) if stride > 1 else dilation * (kernel - 1) // 2
    return weight_norm(nn.Conv1d(cin, cout, kernel, stride, padding=pad, dilation=dilation))


class _ResidualUnit(nn.Module):
    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake(dim), _wn_conv(dim, dim, 7, dilation=dilation), Snake(dim), _wn_conv(dim, dim, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _encoder_block(dim: int, stride: int) -> nn.Sequential:
    half = dim // 2
    units = [_ResidualUnit(half, d) for d in (1, 3, 9)]
    return nn.Sequential(*units, Snake(half), _wn_conv(half, dim, 2 * stride, stride))


def _decoder_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    up = weight_norm(nn.ConvTranspose1d(cin, cout, 2 * stride, stride, padding=math.ceil(stride / 2)))
    return nn.Sequential(Snake(cin), up, *(_ResidualUnit(cout, d) for d in (1, 3, 9)))


class WaveformVAE(PretrainedModel):
    """DAC-style waveform VAE (see the module docstring).

    ``encode(wav (b, n)) -> (mean, logvar)``, each ``(b, latent_dim, n / hop)``; ``decode(z) -> (b, n)``;
    ``forward(wav)`` is the reconstruction-only training pass (mel L1 + KL).
    """

    config_class = WaveformVAEConfig

    def __init__(self, config: WaveformVAEConfig) -> None:
        super().__init__(config)
        c = config
        enc: list[nn.Module] = [_wn_conv(1, c.d_model, 7)]
        width = c.d_model
        for s in c.encoder_strides:
            width *= 2
            enc.append(_encoder_block(width, s))
        enc += [Snake(width), _wn_conv(width, 2 * c.latent_dim, 3)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [_wn_conv(c.latent_dim, c.decoder_dim, 7)]
        width = c.decoder_dim
        for s in c.decoder_strides:
            dec.append(_decoder_block(width, width // 2, s))
            width //= 2
        dec += [Snake(width), _wn_conv(width, 1, 7)]
        self.decoder = nn.Sequential(*dec)

    def _check(self, wav: torch.Tensor) -> None:
        hop = self.config.hop_length
        if wav.ndim != 2 or wav.shape[-1] == 0 or wav.shape[-1] % hop:
            raise ValueError(
                f"WaveformVAE expects (batch, samples) with samples a positive multiple of {hop}, "
                f"got {tuple(wav.shape)}"
            )

    def encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b, n)`` -> posterior ``(mean, logvar)``, each ``(b, latent_dim, n / hop_length)``."""
        self._check(wav)
        h = self.encoder(wav[:, None])
        mean, logvar = h.chunk(2, dim=1)  # the 2·latent_dim outputs: first half mean, second log-variance
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(b, latent_dim, frames)`` -> waveform ``(b, frames · hop_length)``."""
        if z.ndim != 3 or z.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"WaveformVAE.decode expects (batch, {self.config.latent_dim}, frames), got {tuple(z.shape)}"
            )
        y = self.decoder(z)[:, 0]
        if self.config.remove_dc:
            y = y - y.mean(-1, keepdim=True)
        return torch.tanh(y)

    @staticmethod
    def sample(
        mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Reparameterised draw ``mean + exp(logvar / 2) · ε``."""
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    @staticmethod
    def kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mean, exp(logvar)) ‖ N(0, I)), summed over latent channels, averaged over batch and frames."""
        return (0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)).sum(1).mean()

    def reconstruct(
        self, wav: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode, draw z, decode: returns ``(reconstruction (b, n), kl)``."""
        mean, logvar = self.encode(wav)
        return self.decode(self.sample(mean, logvar, generator)), self.kl(mean, logvar)

    def forward(
        self, wav: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction-only objective ``15·L_mel + 1e-4·KL`` (the warm-up before the GAN terms)."""
        fake, kl = self.reconstruct(wav, generator)
        mel = multi_resolution_mel_l1(wav, fake, self.config.mel_configs())
        loss = self.config.mel_weight * mel + self.config.kl_weight * kl
        return loss, {"mel_l1": mel.item(), "kl": kl.item()}


def multi_resolution_mel_l1(real: torch.Tensor, fake: torch.Tensor, configs: list[MelConfig]) -> torch.Tensor:
    """Mean over the resolutions of the L1 distance between ln-mels (DAC's multi-scale mel loss)."""
    n = min(real.shape[-1], fake.shape[-1])
    real, fake = real[..., :n], fake[..., :n]
    return sum(F.l1_loss(mel_spectrogram(fake, c), mel_spectrogram(real, c)) for c in configs) / len(configs)


class WaveformVAETraining(nn.Module):
    """VAE + discriminator as one module whose forward returns the summed objective, as
    :class:`fourfold.audio.gan.HiFiGANTraining` does for HiFi-GAN:

        loss = L_D(real, x̂.detach()) + [λ_adv·L_adv + λ_fm·L_fm + λ_mel·L_mel + λ_kl·KL]

    with LSGAN losses; the generator terms see the discriminator through detached copies of its
    parameters, so one optimizer over both networks makes a simultaneous G/D update. Set
    ``adversarial = False`` for the mel-L1 warm-up (then the discriminator is not used).
    ``forward(wav (batch, samples))`` -> ``(loss, logs)``.
    """

    def __init__(self, vae: WaveformVAE, discriminator: nn.Module) -> None:
        super().__init__()
        self.vae, self.discriminator = vae, discriminator
        self.adversarial = True

    def forward(
        self, wav: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        from fourfold.audio.gan import adversarial_step_losses

        c = self.vae.config
        fake, kl = self.vae.reconstruct(wav, generator)
        mel = multi_resolution_mel_l1(wav, fake, c.mel_configs())
        loss = c.mel_weight * mel + c.kl_weight * kl
        logs = {"mel_l1": mel.item(), "kl": kl.item()}
        if not self.adversarial:
            return loss, logs
        d_loss, adv, fm = adversarial_step_losses(self.discriminator, wav, fake)
        loss = loss + c.adv_weight * adv + c.fm_weight * fm + d_loss
        logs.update(d_loss=d_loss.item(), g_adv=adv.item(), g_fm=fm.item())
        return loss, logs


def train_waveform_vae(
    training: WaveformVAETraining,
    wavs: torch.Tensor,
    *,
    steps: int,
    warmup_steps: int = 0,
    batch_size: int = 8,
    crop: int | None = None,
    learning_rate: float = 1e-4,
    betas: tuple[float, float] = (0.8, 0.99),
    seed: int = 0,
    log=None,
    log_every: int = 50,
    on_step=None,
) -> list[dict[str, float]]:
    """Train on random crops of ``wavs`` ``(n, samples)``: ``warmup_steps`` of mel L1 + KL, then the full
    GAN objective (DAC trains with AdamW 1e-4, betas (0.8, 0.99)). ``crop``: samples per crop (a multiple of
    the hop; default the whole clip). ``on_step(step)`` runs after each update (e.g. to save). Returns one
    log dict per step."""
    hop = training.vae.config.hop_length
    crop = crop or wavs.shape[-1] - wavs.shape[-1] % hop
    if crop % hop or crop > wavs.shape[-1]:
        raise ValueError(
            f"crop ({crop}) must be a multiple of {hop} and at most the clip length {wavs.shape[-1]}"
        )
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(training.parameters(), learning_rate, betas=betas)
    history = []
    training.train()
    for step in range(steps):
        training.adversarial = step >= warmup_steps
        rows = torch.randint(0, len(wavs), (batch_size,), generator=g)
        starts = torch.randint(0, wavs.shape[-1] - crop + 1, (batch_size,), generator=g)
        batch = torch.stack(
            [wavs[r, s : s + crop] for r, s in zip(rows.tolist(), starts.tolist(), strict=True)]
        )
        loss, logs = training(batch, generator=g)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(training.parameters(), 100.0)
        opt.step()
        history.append(logs)
        if on_step is not None:
            on_step(step)
        if log and (step % log_every == 0 or step == steps - 1):
            log(f"step {step} " + " ".join(f"{k} {v:.4f}" for k, v in logs.items()))
    training.eval()
    return history
