"""``DrawAudioConfig``: one nested dataclass for both scales (spec §4).

``DrawAudioConfig.tiny()`` is the CPU scale used by tests and the demo; ``DrawAudioConfig.auffusion(path)``
points at a local Auffusion directory (SD-1.5-size UNet, CLIP text, HiFi-GAN) with a CLIP vision encoder.
Fields marked "(ours)" are reconstructions: the paper body was unavailable (see docs/drawaudio.md).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from fourfold.audio.mel import MelConfig
from fourfold.nn.modeling import atomic_write_text, config_from_dict, config_to_dict

__all__ = [
    "BaseModelConfig",
    "DrawAudioConfig",
    "GuidanceConfig",
    "MAMConfig",
    "TLMConfig",
    "TrainConfig",
    "VideoConfig",
]

MAM_MODES = ("pixels", "tokens", "both")
TLM_INJECT = ("conv_in", "latent")
CFG_MODES = ("dual", "joint")
PARAM_POLICIES = ("adapters", "full")


def _check_in(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass
class BaseModelConfig:
    """The frozen text-to-audio base (spec §2.1)."""

    path: str = ""  # local Auffusion-layout directory; "" = not set yet (tiny demo builds one)
    text_max_tokens: int = 77  # text tokens after zero-padding/truncation ([A]: 77)
    latent_channels: int = 4  # VAE latent channels
    vae_factor: int = 8  # VAE down-sampling factor (Auffusion 8, tiny 4)
    cross_attention_dim: int = 768  # UNet cross-attention width = text adapter output
    vocoder: str = "auto"  # "auto" (HiFi-GAN when vocoder/ exists, else Griffin-Lim) | "griffin_lim"

    def __post_init__(self) -> None:
        for name in ("text_max_tokens", "latent_channels", "vae_factor", "cross_attention_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"base.{name} must be positive, got {getattr(self, name)}")
        _check_in("base.vocoder", self.vocoder, ("auto", "griffin_lim"))


@dataclass
class VideoConfig:
    """Video branch (spec §2.2)."""

    encoder: str = "clip"  # "clip" (frozen CLIPVisionModelWithProjection) | "tiny" (trainable TinyFrameCNN)
    clip_path: str = ""  # local CLIP vision directory for encoder "clip"
    fps: float = 8.0  # frames sampled per second by timestamp (ours; 82 per 10.24-s clip)
    image_size: int = 224  # frames are resized to image_size x image_size before the encoder
    patch_size: int = 16  # TinyFrameCNN patch (pixels); CLIP's own patch size is used for "clip"
    width: int = 64  # TinyFrameCNN channels
    embed_dim: int = 768  # per-frame feature size (CLIP projection dim; TinyFrameCNN output)
    max_frames: int = 256  # time-embedding table size (frames)

    def __post_init__(self) -> None:
        _check_in("video.encoder", self.encoder, ("clip", "tiny"))
        if self.fps <= 0:
            raise ValueError(f"video.fps must be positive, got {self.fps}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"video.image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )


@dataclass
class MAMConfig:
    """Mask-Attention Module: decoupled video cross-attention (spec §2.3)."""

    mode: str = "pixels"  # "pixels" (masked frame stream) | "tokens" (patch key mask) | "both"
    video_scale: float = 1.0  # lambda_v, weight of the video attention (ours, IP-Adapter's scale)
    token_keep_fraction: float = 0.5  # tokens mode: keep a patch iff the mask covers >= this fraction
    train_mask_prob: float = 0.5  # training: use a detected/object mask with this probability (ours)
    # (ours) a learned, zero-initialised time-position map added after conv_in only for samples with video,
    # so the frozen UNet's queries know their time and can align with the time-embedded video tokens;
    # zero video tokens still give exactly the base model
    time_position: bool = True
    # (ours) time-local video attention: a latent column at time t attends only to video tokens whose frame
    # time is within this many seconds of t (0 = global attention over all frames, the literal §2.3 form);
    # aligns video and audio by construction, which the tiny scale needed to learn onsets
    time_window: float = 0.0

    def __post_init__(self) -> None:
        _check_in("mam.mode", self.mode, MAM_MODES)
        _check_prob("mam.token_keep_fraction", self.token_keep_fraction)
        _check_prob("mam.train_mask_prob", self.train_mask_prob)
        if self.time_window < 0:
            raise ValueError(f"mam.time_window must be >= 0 seconds, got {self.time_window}")


@dataclass
class TLMConfig:
    """Time-Loudness Module (spec §2.4)."""

    enabled: bool = True
    inject: str = (
        "conv_in"  # "conv_in" (after unet.conv_in, C = its channels) | "latent" (C = latent channels)
    )
    hidden: int = 64  # Conv1d width
    kernel_size: int = 3
    scale: float = 1.0  # lambda_l
    dropout: float = 0.1  # training: zero the encoder output with this probability (ours)

    def __post_init__(self) -> None:
        _check_in("tlm.inject", self.inject, TLM_INJECT)
        _check_prob("tlm.dropout", self.dropout)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"tlm.kernel_size must be odd (keeps the length), got {self.kernel_size}")


@dataclass
class GuidanceConfig:
    """Sampling defaults (spec §2.6)."""

    cfg: str = "dual"  # "dual" (separate video/text scales) | "joint"
    video: float = 7.5  # s_v
    text: float = 7.5  # s_t (joint CFG uses this one)
    steps: int = 25  # DDIM steps (FoleyCrafter's value)
    scheduler: str = "ddim"  # fourfold.diffusion.make_scheduler name: ddim, dpm++, euler, pndm, ddpm
    window_overlap: float = 1.0  # seconds of overlap between windows for long videos (ours)

    def __post_init__(self) -> None:
        _check_in("guidance.cfg", self.cfg, CFG_MODES)
        if self.steps <= 0:
            raise ValueError(f"guidance.steps must be positive, got {self.steps}")


@dataclass
class TrainConfig:
    """Adapter training (spec §2.5; all values ours)."""

    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    warmup_steps: int = 500
    batch_size: int = 64
    max_steps: int = 100_000
    mixed_precision: str = "bf16"
    text_dropout: float = 0.1
    video_dropout: float = 0.1
    param_policy: str = "adapters"  # "adapters" (paper: video branch + TLM) | "full" (also the UNet)
    seed: int = 0

    def __post_init__(self) -> None:
        _check_in("train.param_policy", self.param_policy, PARAM_POLICIES)
        _check_in("train.mixed_precision", self.mixed_precision, ("no", "bf16", "fp16"))
        _check_prob("train.text_dropout", self.text_dropout)
        _check_prob("train.video_dropout", self.video_dropout)


@dataclass
class DrawAudioConfig:
    """Everything Draw an Audio needs; JSON round trip via :meth:`save` / :meth:`load`."""

    mel: MelConfig = field(default_factory=MelConfig.auffusion)
    duration: float = 10.24  # seconds per generated window
    base: BaseModelConfig = field(default_factory=BaseModelConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    mam: MAMConfig = field(default_factory=MAMConfig)
    tlm: TLMConfig = field(default_factory=TLMConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        frames = self.mel.num_frames(self.num_samples)
        if frames % self.base.vae_factor:
            raise ValueError(
                f"duration {self.duration}s gives {frames} mel frames, not a multiple of base.vae_factor "
                f"{self.base.vae_factor}"
            )
        if self.mel.n_mels % self.base.vae_factor:
            raise ValueError(f"mel.n_mels ({self.mel.n_mels}) must be a multiple of base.vae_factor")

    # derived sizes

    @property
    def num_samples(self) -> int:
        return round(self.duration * self.mel.sample_rate)

    @property
    def mel_frames(self) -> int:
        return self.mel.num_frames(self.num_samples)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(channels, mel bins / f, frames / f): 4x32x128 real, 4x16x64 tiny."""
        f = self.base.vae_factor
        return (self.base.latent_channels, self.mel.n_mels // f, self.mel_frames // f)

    @property
    def loudness_frames(self) -> int:
        """T' = mel frames / VAE factor (1024 -> 128)."""
        return self.mel_frames // self.base.vae_factor

    @property
    def num_video_frames(self) -> int:
        from fourfold.audio.io import frame_times

        return len(frame_times(self.duration, self.video.fps))

    # presets

    @classmethod
    def auffusion(cls, path: str = "", clip_path: str = "") -> DrawAudioConfig:
        """The paper scale over a local Auffusion directory and a local CLIP vision encoder."""
        return cls(
            base=BaseModelConfig(path=str(path)),
            video=VideoConfig(encoder="clip", clip_path=str(clip_path)),
        )

    @classmethod
    def tiny(cls) -> DrawAudioConfig:
        """CPU scale (spec §4): 2.56 s, 64 mels, VAE x4, cross-attention 32, TinyFrameCNN at 12.5 fps."""
        return cls(
            mel=MelConfig.tiny(),
            duration=2.56,
            base=BaseModelConfig(
                text_max_tokens=16, vae_factor=4, cross_attention_dim=32, vocoder="griffin_lim"
            ),
            video=VideoConfig(encoder="tiny", fps=12.5, image_size=64, patch_size=16, width=32, embed_dim=64),
            mam=MAMConfig(time_window=0.12),
            # half of the views without a curve: with the curve 90% of the time it explained the timing and
            # the video branch got little gradient (docs/drawaudio.md)
            tlm=TLMConfig(dropout=0.5),
            guidance=GuidanceConfig(video=3.0, text=3.0, steps=20),
            train=TrainConfig(
                learning_rate=1e-3, warmup_steps=20, batch_size=16, max_steps=1500, mixed_precision="no"
            ),
        )

    # JSON

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> DrawAudioConfig:
        return config_from_dict(cls, data, source=source)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> DrawAudioConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Draw an Audio config not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes) -> DrawAudioConfig:
        return dataclasses.replace(self, **changes)
