"""Vocoders: log-mel ``(batch, n_mels, frames)`` -> waveform ``(batch, frames · hop)``.

- :class:`GriffinLim`: training-free, always available (wraps :func:`fourfold.audio.mel.griffin_lim`).
- :class:`HiFiGAN`: the HiFi-GAN V1 generator (Kong et al. 2020, arXiv 2010.05646, §2.1) with
  Auffusion's transposed-convolution padding rule; its discriminators, losses and a Trainer-ready
  training module are in :mod:`fourfold.audio.gan`.
- :class:`SpeechT5Vocoder`: a transformers ``SpeechT5HifiGan`` directory (AudioLDM's ``vocoder/``).

:func:`load_vocoder` picks one from a local directory (never the hub).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from fourfold.audio.mel import MelConfig, griffin_lim
from fourfold.nn import CheckpointError, PretrainedModel

__all__ = [
    "GriffinLim",
    "HiFiGAN",
    "HiFiGANConfig",
    "SpeechT5Vocoder",
    "load_vocoder",
]

LRELU_SLOPE = 0.1  # HiFi-GAN's leaky-ReLU slope


class GriffinLim(nn.Module):
    """The default vocoder: clamped pseudo-inverse mel + fast Griffin-Lim (32 iterations, momentum 0.99)."""

    def __init__(self, cfg: MelConfig, n_iter: int = 32, momentum: float = 0.99, seed: int = 0) -> None:
        super().__init__()
        self.cfg, self.n_iter, self.momentum, self.seed = cfg, n_iter, momentum, seed

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``(batch, n_mels, frames)`` ln-mel -> ``(batch, frames · hop)``."""
        return griffin_lim(mel, self.cfg, n_iter=self.n_iter, momentum=self.momentum, seed=self.seed)


# generator


@dataclass
class HiFiGANConfig:
    num_mels: int = 80  # mel bands of the input
    hop_length: int = 256  # samples per mel frame; must equal prod(upsample_rates)
    sample_rate: int = 22050  # Hz (recorded for users; the network does not depend on it)
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    upsample_initial_channel: int = 512  # halves after every upsampling
    resblock: str = "1"  # "1": 3 dilated conv pairs per block (V1); "2": 2 dilated convs (V3)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))

    def __post_init__(self) -> None:
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError(
                "HiFiGANConfig.upsample_kernel_sizes must have one entry per upsample_rates entry"
            )
        if math.prod(self.upsample_rates) != self.hop_length:
            raise ValueError(
                f"HiFiGANConfig.upsample_rates multiply to {math.prod(self.upsample_rates)}, "
                f"but hop_length is {self.hop_length}"
            )
        if self.resblock not in ("1", "2"):
            raise ValueError(f"HiFiGANConfig.resblock must be '1' or '2', got {self.resblock!r}")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("HiFiGANConfig.resblock_dilation_sizes must match resblock_kernel_sizes")
        if self.upsample_initial_channel >> len(self.upsample_rates) < 1:
            raise ValueError(
                "HiFiGANConfig.upsample_initial_channel is too small for the number of upsamplings"
            )

    @classmethod
    def paper(cls, num_mels: int = 80, hop_length: int = 256, sample_rate: int = 22050) -> HiFiGANConfig:
        """HiFi-GAN V1 (§4, Table 1): 512 channels, ResBlock1 (3, 7, 11) × dilations (1, 3, 5).

        Hop 256: rates (8, 8, 2, 2), kernels (16, 16, 4, 4) as the paper; hop 160 (Auffusion, AudioLDM):
        rates (5, 4, 2, 2, 2), kernels (16, 16, 8, 4, 4) (ours: kernels ≈ 2-4 × rate as in V1).
        """
        layouts = {256: ((8, 8, 2, 2), (16, 16, 4, 4)), 160: ((5, 4, 2, 2, 2), (16, 16, 8, 4, 4))}
        if hop_length not in layouts:
            raise ValueError(f"HiFiGANConfig.paper has layouts for hop 256 and 160, not {hop_length}")
        rates, kernels = layouts[hop_length]
        return cls(num_mels, hop_length, sample_rate, rates, kernels)

    @classmethod
    def tiny(cls, num_mels: int = 64, hop_length: int = 160, sample_rate: int = 16000) -> HiFiGANConfig:
        """CPU test size (~40k parameters): 32 channels, one ResBlock2 per stage."""
        rates = {160: (8, 5, 4), 256: (8, 8, 4), 640: (8, 5, 4, 4)}.get(hop_length)
        if rates is None:
            raise ValueError(f"HiFiGANConfig.tiny has layouts for hop 160, 256 and 640, not {hop_length}")
        return cls(
            num_mels,
            hop_length,
            sample_rate,
            rates,
            tuple(2 * r for r in rates),
            upsample_initial_channel=32,
            resblock="2",
            resblock_kernel_sizes=(3,),
            resblock_dilation_sizes=((1, 3),),
        )


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class _ResBlock(nn.Module):
    """Dilated residual convolutions (HiFi-GAN MRF, §2.1): ResBlock1 pairs each dilated conv with a plain one."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...], pairs: bool) -> None:
        super().__init__()

        def conv(d: int) -> nn.Module:
            return weight_norm(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d)))

        self.convs1 = nn.ModuleList(conv(d) for d in dilations)
        self.convs2 = nn.ModuleList(conv(1) for _ in dilations) if pairs else None
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.normal_(m.parametrizations.weight.original1, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, c1 in enumerate(self.convs1):
            h = c1(F.leaky_relu(x, LRELU_SLOPE))
            if self.convs2 is not None:
                h = self.convs2[i](F.leaky_relu(h, LRELU_SLOPE))
            x = x + h
        return x


class HiFiGAN(PretrainedModel):
    """HiFi-GAN generator: ln-mel ``(batch, num_mels, frames)`` -> waveform ``(batch, frames · hop)`` in [-1, 1].

    Convolutions carry weight normalisation (``torch.nn.utils.parametrizations.weight_norm``).
    Transposed convolutions follow Auffusion's rule so odd ``k − u`` still upsample exactly by ``u``:
    even → padding ``(k − u)/2``; odd → padding ``(k − u)//2 + 1`` with ``output_padding`` 1.
    """

    config_class = HiFiGANConfig

    def __init__(self, config: HiFiGANConfig) -> None:
        super().__init__(config)
        c = config
        ch = c.upsample_initial_channel
        self.conv_pre = weight_norm(nn.Conv1d(c.num_mels, ch, 7, padding=3))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes, strict=True)):
            cin, cout = ch >> i, ch >> (i + 1)
            pad, out_pad = ((k - u) // 2, 0) if (k - u) % 2 == 0 else ((k - u) // 2 + 1, 1)
            up = weight_norm(nn.ConvTranspose1d(cin, cout, k, u, padding=pad, output_padding=out_pad))
            nn.init.normal_(up.parametrizations.weight.original1, 0.0, 0.01)
            self.ups.append(up)
            for kr, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes, strict=True):
                self.resblocks.append(_ResBlock(cout, kr, tuple(d), pairs=c.resblock == "1"))
        self.conv_post = weight_norm(nn.Conv1d(ch >> len(c.upsample_rates), 1, 7, padding=3))
        nn.init.normal_(self.conv_post.parametrizations.weight.original1, 0.0, 0.01)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.ndim != 3 or mel.shape[1] != self.config.num_mels:
            raise ValueError(
                f"HiFiGAN expects a mel (batch, {self.config.num_mels}, frames), got {tuple(mel.shape)}"
            )
        x = self.conv_pre(mel)
        n_k = len(self.config.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            x = sum(self.resblocks[i * n_k + j](x) for j in range(n_k)) / n_k  # multi-receptive-field fusion
        x = self.conv_post(F.leaky_relu(x))  # default slope 0.01 here, as the reference generator
        return torch.tanh(x)[:, 0]

    @classmethod
    def from_auffusion(cls, directory: str | Path) -> HiFiGAN:
        """Load Auffusion's ``vocoder/``: ``config.json`` (HiFi-GAN training config) + ``vocoder.pt``
        (``{"generator": state}`` with old-style ``weight_g``/``weight_v`` weight-norm keys).

        The file is read with ``torch.load(weights_only=True)``; keys and shapes are checked strictly.
        """
        directory = Path(directory)
        cfg_path, ckpt_path = directory / "config.json", directory / "vocoder.pt"
        for p in (cfg_path, ckpt_path):
            if not p.is_file():
                raise CheckpointError(f"HiFi-GAN vocoder: missing file {p}")
        try:
            raw = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{cfg_path} is not valid JSON: {err}") from err
        needed = ("num_mels", "hop_size", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
                  "resblock", "resblock_kernel_sizes", "resblock_dilation_sizes")  # fmt: skip
        missing = [k for k in needed if k not in raw]
        if missing:
            raise CheckpointError(f"{cfg_path}: HiFi-GAN config lacks {missing}")
        try:
            config = HiFiGANConfig(
                num_mels=raw["num_mels"],
                hop_length=raw["hop_size"],
                sample_rate=raw.get("sampling_rate", 16000),
                upsample_rates=tuple(raw["upsample_rates"]),
                upsample_kernel_sizes=tuple(raw["upsample_kernel_sizes"]),
                upsample_initial_channel=raw["upsample_initial_channel"],
                resblock=str(raw["resblock"]),
                resblock_kernel_sizes=tuple(raw["resblock_kernel_sizes"]),
                resblock_dilation_sizes=tuple(tuple(d) for d in raw["resblock_dilation_sizes"]),
            )
        except ValueError as err:
            raise CheckpointError(f"{cfg_path}: {err}") from err
        try:
            blob = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"cannot read {ckpt_path} (weights-only load): {err}") from err
        if not isinstance(blob, dict) or "generator" not in blob:
            raise CheckpointError(f"{ckpt_path}: expected a dict with a 'generator' state")
        model = cls(config)
        state = {_new_weight_norm_key(k): v for k, v in blob["generator"].items()}
        from fourfold.nn import check_state_dict

        check_state_dict(model.state_dict(), state, source=str(ckpt_path))
        model.load_state_dict(state)
        return model

    def auffusion_state(self) -> dict[str, torch.Tensor]:
        """This generator's weights under Auffusion's (old weight-norm) key names, for ``vocoder.pt``."""
        return {_old_weight_norm_key(k): v.detach().clone() for k, v in self.state_dict().items()}


def _new_weight_norm_key(key: str) -> str:
    return key.replace(".weight_g", ".parametrizations.weight.original0").replace(
        ".weight_v", ".parametrizations.weight.original1"
    )


def _old_weight_norm_key(key: str) -> str:
    return key.replace(".parametrizations.weight.original0", ".weight_g").replace(
        ".parametrizations.weight.original1", ".weight_v"
    )


# transformers SpeechT5HifiGan (AudioLDM)


class SpeechT5Vocoder(nn.Module):
    """A transformers ``SpeechT5HifiGan`` loaded from a local directory (AudioLDM's ``vocoder/``).

    ``forward(mel (batch, n_mels, frames))`` -> ``(batch, samples)``; the model itself takes
    ``(batch, frames, n_mels)`` and applies its stored mean/scale normalisation when configured to.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> SpeechT5Vocoder:
        from transformers import SpeechT5HifiGan

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise CheckpointError(f"SpeechT5HifiGan vocoder: missing file {directory / 'config.json'}")
        try:
            model = SpeechT5HifiGan.from_pretrained(
                str(directory), local_files_only=True, dtype=torch.float32
            )
        except (OSError, ValueError) as err:
            raise CheckpointError(f"cannot load SpeechT5HifiGan from {directory}: {err}") from err
        return cls(model.eval())

    @property
    def num_mels(self) -> int:
        return int(self.model.config.model_in_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.ndim != 3 or mel.shape[1] != self.num_mels:
            raise ValueError(
                f"SpeechT5HifiGan expects (batch, {self.num_mels}, frames), got {tuple(mel.shape)}"
            )
        return self.model(rearrange(mel, "b m t -> b t m"))


def load_vocoder(directory: str | Path | None, mel_cfg: MelConfig, n_iter: int = 32) -> nn.Module:
    """Pick a vocoder for ``mel_cfg`` from a local directory:

    - ``None`` -> :class:`GriffinLim`;
    - ``vocoder.pt`` present -> Auffusion HiFi-GAN (:meth:`HiFiGAN.from_auffusion`);
    - ``model.safetensors`` with a fourfold ``HiFiGAN`` ``config.json`` -> :meth:`HiFiGAN.from_pretrained`;
    - a transformers ``SpeechT5HifiGan`` config -> :class:`SpeechT5Vocoder`.

    The vocoder's mel bands must equal ``mel_cfg.n_mels``.
    """
    if directory is None:
        return GriffinLim(mel_cfg, n_iter=n_iter)
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"vocoder directory not found: {directory}")
    if (directory / "vocoder.pt").is_file():
        model, n_mels = HiFiGAN.from_auffusion(directory), None
    else:
        cfg_path = directory / "config.json"
        if not cfg_path.is_file():
            raise CheckpointError(f"vocoder directory {directory} has neither vocoder.pt nor config.json")
        try:
            kind = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{cfg_path} is not valid JSON: {err}") from err
        if "hop_size" in kind:  # an Auffusion / HiFi-GAN training config: its weights live in vocoder.pt
            model, n_mels = HiFiGAN.from_auffusion(directory), None
        elif kind.get("model_type") == "HiFiGAN":
            model, n_mels = HiFiGAN.from_pretrained(directory), None
        elif kind.get("model_type") in ("hifigan", "speecht5_hifigan") or "SpeechT5HifiGan" in kind.get(
            "architectures", []
        ):
            model = SpeechT5Vocoder.from_pretrained(directory)
            n_mels = model.num_mels
        else:
            raise CheckpointError(f"{cfg_path}: unknown vocoder type {kind.get('model_type')!r}")
    n_mels = n_mels or model.config.num_mels
    if n_mels != mel_cfg.n_mels:
        raise CheckpointError(
            f"vocoder in {directory} takes {n_mels} mel bands, the mel config has {mel_cfg.n_mels}"
        )
    return model.eval()
