"""HiFi-GAN adversarial training: multi-period and multi-scale discriminators, the paper's losses, and a
training module that runs through :class:`fourfold.train.Trainer`.

HiFi-GAN (Kong et al. 2020, arXiv 2010.05646): MPD (§2.2) folds audio by periods 2, 3, 5, 7, 11; MSD
(§2.3, MelGAN's) looks at raw, ×2 and ×4 average-pooled audio. Losses (§2.4): LSGAN (Eq. 1-2), feature
matching (Eq. 4, weight 2) and mel L1 (Eq. 3, weight 45); Eq. 6 sums them. Audio is ``(batch, samples)``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from fourfold.audio.mel import MelConfig, mel_spectrogram, normalize_waveform
from fourfold.audio.vocoder import LRELU_SLOPE, HiFiGAN
from fourfold.nn import PretrainedModel

__all__ = [
    "FM_LOSS_WEIGHT",
    "MEL_LOSS_WEIGHT",
    "DACDiscriminator",
    "DACDiscriminatorConfig",
    "HiFiGANDiscriminator",
    "HiFiGANDiscriminatorConfig",
    "HiFiGANTraining",
    "MultiBandSTFTDiscriminator",
    "adversarial_step_losses",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "hifigan_generator_loss",
]

MEL_LOSS_WEIGHT = 45.0  # λ_mel, HiFi-GAN Eq. 6
FM_LOSS_WEIGHT = 2.0  # λ_fm, HiFi-GAN Eq. 6


@dataclass
class HiFiGANDiscriminatorConfig:
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)  # MPD periods (primes, §2.2)
    num_scales: int = 3  # MSD: raw audio, ×2 and ×4 average-pooled (§2.3)
    width: float = 1.0  # channel multiplier (1 = paper; tiny configs use 1/16)

    def __post_init__(self) -> None:
        if not self.periods or any(p < 1 for p in self.periods):
            raise ValueError(f"HiFiGANDiscriminatorConfig.periods must be positive, got {self.periods}")
        if self.num_scales < 0:
            raise ValueError("HiFiGANDiscriminatorConfig.num_scales must be >= 0")
        if not 0 < self.width <= 1:
            raise ValueError(f"HiFiGANDiscriminatorConfig.width must be in (0, 1], got {self.width}")

    @classmethod
    def paper(cls) -> HiFiGANDiscriminatorConfig:
        return cls()

    @classmethod
    def tiny(cls) -> HiFiGANDiscriminatorConfig:
        return cls(periods=(2, 3), num_scales=2, width=1 / 16)


def _ch(c: int, width: float) -> int:
    return max(4, int(c * width))


class _PeriodDiscriminator(nn.Module):
    """Folds ``(batch, T)`` audio into ``(batch, 1, T/p, p)`` and applies (k, 1) 2-D convolutions."""

    def __init__(self, period: int, width: float) -> None:
        super().__init__()
        self.period = period
        chans = [1, *(_ch(c, width) for c in (32, 128, 512, 1024))]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1), padding=(2, 0))) for a, b in itertools.pairwise(chans)
        )
        self.convs.append(weight_norm(nn.Conv2d(chans[-1], chans[-1], (5, 1), 1, padding=(2, 0))))
        self.conv_post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        pad = (-wav.shape[-1]) % self.period
        x = F.pad(wav[:, None], (0, pad), mode="reflect") if pad else wav[:, None]
        x = rearrange(x, "b c (t p) -> b c t p", p=self.period)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            feats.append(x)
        x = self.conv_post(x)
        feats.append(x)
        return x.flatten(1), feats


class _ScaleDiscriminator(nn.Module):
    """Grouped strided 1-D convolutions (MelGAN's discriminator); the raw-scale one uses spectral norm."""

    def __init__(self, width: float, spectral: bool) -> None:
        super().__init__()
        norm = spectral_norm if spectral else weight_norm
        spec = [  # (in, out, kernel, stride, groups, padding) at width 1
            (1, 128, 15, 1, 1, 7), (128, 128, 41, 2, 4, 20), (128, 256, 41, 2, 16, 20), (256, 512, 41, 4, 16, 20),
            (512, 1024, 41, 4, 16, 20), (1024, 1024, 41, 1, 16, 20), (1024, 1024, 5, 1, 1, 2),
        ]  # fmt: skip
        self.convs = nn.ModuleList()
        for cin, cout, k, s, g, p in spec:
            a, b = (1 if cin == 1 else _ch(cin, width)), _ch(cout, width)
            self.convs.append(norm(nn.Conv1d(a, b, k, s, groups=math.gcd(g, math.gcd(a, b)), padding=p)))
        self.conv_post = norm(nn.Conv1d(_ch(1024, width), 1, 3, 1, padding=1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, feats = wav[:, None], []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            feats.append(x)
        x = self.conv_post(x)
        feats.append(x)
        return x.flatten(1), feats


class HiFiGANDiscriminator(PretrainedModel):
    """MPD + MSD. ``forward(wav (batch, T))`` -> (scores: list of ``(batch, n)``, features: list of lists)."""

    config_class = HiFiGANDiscriminatorConfig

    def __init__(self, config: HiFiGANDiscriminatorConfig) -> None:
        super().__init__(config)
        self.periods = nn.ModuleList(_PeriodDiscriminator(p, config.width) for p in config.periods)
        self.scales = nn.ModuleList(
            _ScaleDiscriminator(config.width, spectral=i == 0) for i in range(config.num_scales)
        )

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        scores, feats = [], []
        for d in self.periods:
            s, f = d(wav)
            scores.append(s)
            feats.append(f)
        x = wav
        for i, d in enumerate(self.scales):
            if i > 0:  # each further scale sees the audio average-pooled by 2 once more
                x = F.avg_pool1d(x[:, None], 4, 2, padding=2)[:, 0]
            s, f = d(x)
            scores.append(s)
            feats.append(f)
        return scores, feats


# DAC's discriminator (Kumar et al. 2023, arXiv 2306.06546, §3.3): the MPD above plus a multi-band
# multi-resolution complex-STFT discriminator; SongCreator's waveform VAE trains against it (App A.3).

STFT_BANDS = (
    (0.0, 0.1),
    (0.1, 0.25),
    (0.25, 0.5),
    (0.5, 0.75),
    (0.75, 1.0),
)  # DAC's bands (fractions of bins)


@dataclass
class DACDiscriminatorConfig:
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)  # MPD periods (DAC = HiFi-GAN's)
    stft_windows: tuple[int, ...] = (2048, 1024, 512)  # STFT resolutions, hop = window / 4 (DAC)
    stft_channels: int = 32  # channels of each band's 2-D conv stack (DAC)
    bands: tuple[tuple[float, float], ...] = STFT_BANDS
    mpd_width: float = 1.0  # MPD channel multiplier (1 = HiFi-GAN/DAC)

    def __post_init__(self) -> None:
        if any(p < 1 for p in self.periods):
            raise ValueError(f"DACDiscriminatorConfig.periods must be positive, got {self.periods}")
        if any(w < 16 or w % 4 for w in self.stft_windows):
            raise ValueError(
                f"DACDiscriminatorConfig.stft_windows must be multiples of 4 >= 16, got {self.stft_windows}"
            )
        if not self.periods and not self.stft_windows:
            raise ValueError("DACDiscriminatorConfig needs at least one period or STFT window")
        if self.stft_channels < 1 or not 0 < self.mpd_width <= 1:
            raise ValueError("DACDiscriminatorConfig.stft_channels must be >= 1 and mpd_width in (0, 1]")
        self.bands = tuple(tuple(float(x) for x in b) for b in self.bands)
        if not self.bands or any(not 0 <= lo < hi <= 1 for lo, hi in self.bands):
            raise ValueError(
                f"DACDiscriminatorConfig.bands must be (lo, hi) fractions with lo < hi, got {self.bands}"
            )

    @classmethod
    def paper(cls) -> DACDiscriminatorConfig:
        return cls()

    @classmethod
    def tiny(cls) -> DACDiscriminatorConfig:
        return cls(periods=(2, 3, 5), stft_windows=(512, 256, 128), stft_channels=8, mpd_width=1 / 16)


class _BandSTFTDiscriminator(nn.Module):
    """One STFT resolution: the complex STFT ``(batch, 2, frames, bins)`` is cut into frequency bands,
    each band runs its own weight-normalised 2-D conv stack (strided along frequency), and the band
    outputs are joined along frequency before a last conv."""

    def __init__(self, window: int, channels: int, bands: tuple[tuple[float, float], ...]) -> None:
        super().__init__()
        self.window = window
        n_bins = window // 2 + 1
        self.bands = [(int(lo * n_bins), max(int(lo * n_bins) + 1, int(hi * n_bins))) for lo, hi in bands]
        self.register_buffer("hann", torch.hann_window(window), persistent=False)

        def stack() -> nn.ModuleList:
            ch = channels
            return nn.ModuleList(
                [
                    weight_norm(nn.Conv2d(2, ch, (3, 9), (1, 1), padding=(1, 4))),
                    *(weight_norm(nn.Conv2d(ch, ch, (3, 9), (1, 2), padding=(1, 4))) for _ in range(3)),
                    weight_norm(nn.Conv2d(ch, ch, (3, 3), (1, 1), padding=(1, 1))),
                ]
            )

        self.band_convs = nn.ModuleList(stack() for _ in self.bands)
        self.conv_post = weight_norm(nn.Conv2d(channels, 1, (3, 3), (1, 1), padding=(1, 1)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = torch.stft(
            wav, self.window, self.window // 4, window=self.hann, center=True, return_complex=True
        )
        x = rearrange(torch.view_as_real(spec), "b f t c -> b c t f")
        outs, feats = [], []
        for (lo, hi), convs in zip(self.bands, self.band_convs, strict=True):
            h = x[..., lo:hi]
            for conv in convs:
                h = F.leaky_relu(conv(h), LRELU_SLOPE)
                feats.append(h)
            outs.append(h)
        h = self.conv_post(torch.cat(outs, dim=-1))
        feats.append(h)
        return h.flatten(1), feats


class MultiBandSTFTDiscriminator(nn.Module):
    """DAC's multi-band multi-resolution STFT discriminator: one :class:`_BandSTFTDiscriminator` per
    window. ``forward(wav (batch, T))`` -> (scores: list of ``(batch, n)``, features: list of lists)."""

    def __init__(
        self, windows: tuple[int, ...], channels: int, bands: tuple[tuple[float, float], ...]
    ) -> None:
        super().__init__()
        self.resolutions = nn.ModuleList(_BandSTFTDiscriminator(w, channels, bands) for w in windows)

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        outs = [d(wav) for d in self.resolutions]
        return [s for s, _ in outs], [f for _, f in outs]


class DACDiscriminator(PretrainedModel):
    """MPD + multi-band multi-resolution STFT discriminator (DAC). ``forward(wav (batch, T))`` ->
    (scores, features) in the layout of :class:`HiFiGANDiscriminator`, so the LSGAN and feature-matching
    losses below apply unchanged."""

    config_class = DACDiscriminatorConfig

    def __init__(self, config: DACDiscriminatorConfig) -> None:
        super().__init__(config)
        self.periods = nn.ModuleList(_PeriodDiscriminator(p, config.mpd_width) for p in config.periods)
        self.stft = MultiBandSTFTDiscriminator(config.stft_windows, config.stft_channels, config.bands)

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        if wav.ndim != 2:
            raise ValueError(f"DACDiscriminator expects (batch, samples), got {tuple(wav.shape)}")
        scores, feats = [], []
        for d in self.periods:
            s, f = d(wav)
            scores.append(s)
            feats.append(f)
        s, f = self.stft(wav)
        return scores + s, feats + f


# losses (HiFi-GAN §2.4)


def discriminator_loss(real_scores: list[torch.Tensor], fake_scores: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN (Eq. 1): ``Σ_k E[(D_k(x) − 1)²] + E[D_k(G(s))²]`` (pass fake audio detached)."""
    return sum(
        torch.mean((1 - r) ** 2) + torch.mean(f**2) for r, f in zip(real_scores, fake_scores, strict=True)
    )


def generator_adversarial_loss(fake_scores: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN (Eq. 2): ``Σ_k E[(D_k(G(s)) − 1)²]``."""
    return sum(torch.mean((1 - f) ** 2) for f in fake_scores)


def feature_matching_loss(
    real_feats: list[list[torch.Tensor]], fake_feats: list[list[torch.Tensor]]
) -> torch.Tensor:
    """Eq. 4: ``Σ_k Σ_i mean |D_k^i(x) − D_k^i(G(s))|`` over every layer of every sub-discriminator."""
    return sum(
        torch.mean(torch.abs(r.detach() - f))
        for rs, fs in zip(real_feats, fake_feats, strict=True)
        for r, f in zip(rs, fs, strict=True)
    )


def adversarial_step_losses(
    discriminator: nn.Module, real_wav: torch.Tensor, fake_wav: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The adversarial terms of one simultaneous G/D update: ``(d_loss, adv, fm)``.

    ``d_loss`` (Eq. 1) sees the fake audio detached, so it trains only the discriminator; ``adv`` (Eq. 2)
    and ``fm`` (Eq. 4) run the discriminator with its weights detached (``functional_call``), so they train
    only the generator. Summed into one loss, a single backward then gives each side its own gradient.
    ``real_wav``/``fake_wav``: ``(batch, samples)``.
    """
    real_scores, real_feats = discriminator(real_wav)
    fake_scores_d, _ = discriminator(fake_wav.detach())
    d_loss = discriminator_loss(real_scores, fake_scores_d)
    frozen = {
        k: v.detach()
        for k, v in itertools.chain(discriminator.named_parameters(), discriminator.named_buffers())
    }
    fake_scores, fake_feats = functional_call(discriminator, frozen, (fake_wav,))
    adv = generator_adversarial_loss(fake_scores)
    fm = feature_matching_loss(real_feats, fake_feats)
    return d_loss, adv, fm


def hifigan_generator_loss(
    discriminator: HiFiGANDiscriminator,
    real_wav: torch.Tensor,
    fake_wav: torch.Tensor,
    mel_cfg: MelConfig,
    mel_weight: float = MEL_LOSS_WEIGHT,
    fm_weight: float = FM_LOSS_WEIGHT,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Generator objective (Eq. 6): ``L_adv + 2·L_fm + 45·L_mel`` with ``L_mel = ‖φ(x) − φ(G(s))‖₁`` on
    the ln-mel of ``mel_cfg``. ``real_wav``/``fake_wav``: ``(batch, T)`` (cut to the shorter).

    Peak normalisation is switched off for the mel loss so loudness errors are penalised.
    """
    n = min(real_wav.shape[-1], fake_wav.shape[-1])
    real_wav, fake_wav = real_wav[..., :n], fake_wav[..., :n]
    loss_cfg = mel_cfg.replace(peak_norm=None, remove_dc=False)
    mel_l1 = F.l1_loss(mel_spectrogram(fake_wav, loss_cfg), mel_spectrogram(real_wav, loss_cfg))
    _, real_feats = discriminator(real_wav)
    fake_scores, fake_feats = discriminator(fake_wav)
    adv = generator_adversarial_loss(fake_scores)
    fm = feature_matching_loss(real_feats, fake_feats)
    loss = adv + fm_weight * fm + mel_weight * mel_l1
    return loss, {"adv": adv.item(), "fm": fm.item(), "mel_l1": mel_l1.item()}


class HiFiGANTraining(nn.Module):
    """Generator + discriminator as one module whose forward returns the summed GAN objective.

    ``forward(wav (batch, samples))`` -> ``(loss, logs)``: the clip is peak-normalised as ``mel_cfg``
    does, its ln-mel is vocoded, and

        loss = L_D(real, G(s).detach()) + [L_adv(G) + 2·L_fm + 45·L_mel]

    where the generator terms see the discriminator through detached copies of its parameters
    (``torch.func.functional_call``), so each half of the sum only moves its own network. One optimizer
    over both (HiFi-GAN trains both with AdamW 2e-4, betas (0.8, 0.99)) then performs a simultaneous
    G/D update, which lets the GAN train through the shared Trainer (``loss_fn = lambda m, b: m(b)``),
    with its DDP, accumulation and checkpoints. ``samples`` must be a multiple of the hop.
    """

    def __init__(self, generator: HiFiGAN, discriminator: HiFiGANDiscriminator, mel_cfg: MelConfig) -> None:
        super().__init__()
        if generator.config.num_mels != mel_cfg.n_mels or generator.config.hop_length != mel_cfg.hop_length:
            raise ValueError(
                f"generator takes {generator.config.num_mels} mels at hop {generator.config.hop_length}; "
                f"mel config has {mel_cfg.n_mels} at hop {mel_cfg.hop_length}"
            )
        self.generator, self.discriminator, self.mel_cfg = generator, discriminator, mel_cfg

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if wav.ndim != 2 or wav.shape[-1] % self.mel_cfg.hop_length:
            raise ValueError(
                f"expected (batch, samples) with samples a multiple of {self.mel_cfg.hop_length}, got {tuple(wav.shape)}"
            )
        real = normalize_waveform(wav.float(), self.mel_cfg)
        fake = self.generator(mel_spectrogram(real, self.mel_cfg))
        d_loss, adv, fm = adversarial_step_losses(self.discriminator, real, fake)
        loss_cfg = self.mel_cfg.replace(peak_norm=None, remove_dc=False)
        mel_l1 = F.l1_loss(mel_spectrogram(fake, loss_cfg), mel_spectrogram(real, loss_cfg))
        g_loss = adv + FM_LOSS_WEIGHT * fm + MEL_LOSS_WEIGHT * mel_l1
        logs = {"d_loss": d_loss.item(), "g_adv": adv.item(), "g_fm": fm.item(), "mel_l1": mel_l1.item()}
        return d_loss + g_loss, logs
