"""``DrawAudioModel``: the frozen base UNet with the trainable video branch (MAM) and TLM (spec §2.2-2.5).

Axis legend: B batch, F video frames, P patches per frame, S streams (full, masked), N video tokens = S·F·P,
L text tokens, D cross-attention width, T' latent frames.

Trainable [F 🔥]: the frame encoder (tiny scale only; CLIP stays frozen), the video tokenizer (projection,
LayerNorm, stream and patch embeddings), every W'_k / W'_v of the decoupled cross-attention, and the TLM
encoder. Everything of the base is frozen [F ❄] (``param_policy="full"`` also trains the UNet).
Checkpoints (:meth:`save_adapter`) hold only the trainable part.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from einops import repeat
from torch import nn

from fourfold.diffusion import training_step
from fourfold.drawaudio.attention import attach_video_attention
from fourfold.drawaudio.base import AudioBase, load_base
from fourfold.drawaudio.config import DrawAudioConfig
from fourfold.drawaudio.masks import MaskInput
from fourfold.drawaudio.tlm import TLMEncoder, inject_conv_in
from fourfold.drawaudio.video import (
    TinyFrameCNN,
    VideoTokenizer,
    build_frame_encoder,
    expand_streams,
    frames_to_tensor,
    patch_keep_mask,
)
from fourfold.nn.modeling import (
    CheckpointError,
    atomic_write_dir,
    check_state_dict,
    config_to_dict,
    load_safetensors_checked,
)

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "DrawAudioModel", "prepare_video"]

ADAPTER_CONFIG = "drawaudio_config.json"
ADAPTER_WEIGHTS = "adapter.safetensors"


def prepare_video(
    frames: np.ndarray,
    fps: float,
    cfg: DrawAudioConfig,
    mask: MaskInput | np.ndarray | None = None,
    start: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Sample frames by timestamp at ``cfg.video.fps`` over ``[start, start + duration)`` and render the mask.

    ``frames`` uint8 (F_src, H, W, 3) at ``fps`` -> (F, 3, S, S) float in [0, 1], mask (F, S, S) float or
    None, frame times (F,) seconds relative to ``start``. A per-pixel mask array must be (H, W) or (F_src, H, W).
    """
    from fourfold.audio.io import VideoError, frame_times

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] == 0:
        raise VideoError(f"video frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    times = frame_times(cfg.duration, cfg.video.fps)
    idx = np.clip(np.floor((times + start) * fps + 1e-6).astype(int), 0, frames.shape[0] - 1)
    size = cfg.video.image_size
    x = frames_to_tensor(frames[idx], size)[0]
    m = None
    if mask is not None:
        mask = mask if isinstance(mask, MaskInput) else MaskInput.from_array(mask)
        if mask.bitmap is not None and mask.bitmap.ndim == 3:
            if mask.bitmap.shape[0] != frames.shape[0]:
                from fourfold.drawaudio.masks import MaskError

                raise MaskError(
                    f"per-frame mask has {mask.bitmap.shape[0]} frames, the video {frames.shape[0]}"
                )
            m = MaskInput(bitmap=mask.bitmap[idx]).render(times, size, size)
        else:
            m = mask.render(times + start, size, size)
        m = torch.from_numpy(m)
    return x, m, torch.from_numpy(times).float()


class DrawAudioModel(nn.Module):
    """Base + adapter. ``forward(x, t, ...)`` is the denoiser; :meth:`loss` the training objective."""

    def __init__(self, cfg: DrawAudioConfig, base: AudioBase):
        super().__init__()
        self.cfg = cfg
        self.base = base.freeze()
        self.unet, self.vae, self.text = base.unet, base.vae, base.text  # registered: .to()/prepare move them
        d = base.unet.config.cross_attention_dim
        if d != cfg.base.cross_attention_dim:
            raise CheckpointError(
                f"UNet cross_attention_dim {d} != config base.cross_attention_dim {cfg.base.cross_attention_dim}"
            )
        self.video_params = attach_video_attention(
            base.unet, cfg.mam.video_scale, cfg.latent_shape[1:], cfg.duration, cfg.mam.time_window
        )
        self.frame_encoder = build_frame_encoder(cfg)
        patches = (cfg.video.image_size // cfg.video.patch_size) ** 2
        self.video_tokenizer = VideoTokenizer(self.frame_encoder.out_dim, d, max_patches=max(patches, 1024))
        self.tlm = None
        if cfg.tlm.enabled:
            channels = (
                base.unet.conv_in.out_channels if cfg.tlm.inject == "conv_in" else cfg.base.latent_channels
            )
            self.tlm = TLMEncoder(channels, cfg.tlm.hidden, cfg.tlm.kernel_size, cfg.tlm.scale)
        self.time_position = None
        if cfg.mam.time_position:
            c_in = base.unet.conv_in.out_channels
            self.time_position = nn.Parameter(torch.zeros(c_in, 1, cfg.loudness_frames))
        self.set_param_policy(cfg.train.param_policy)

    # parameters

    def set_param_policy(self, policy: str) -> None:
        """``adapters``: only the video branch and TLM train (paper); ``full``: the UNet too."""
        self.requires_grad_(False)
        for p in self.adapter_parameters():
            p.requires_grad_(True)
        if policy == "full":
            self.unet.requires_grad_(True)
        elif policy != "adapters":
            raise ValueError(f"param_policy must be 'adapters' or 'full', got {policy!r}")

    def _trainable_encoder(self) -> bool:
        return isinstance(self.frame_encoder, TinyFrameCNN)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the adapter: W'_k/W'_v (``unet.*.processor.*``), video tokenizer, time-position map, TLM, tiny frame encoder."""
        state = {}
        for k, v in self.state_dict().items():
            if (
                (k.startswith("unet.") and ".processor." in k)
                or k.startswith(("video_tokenizer.", "tlm."))
                or k == "time_position"
                or (k.startswith("frame_encoder.") and self._trainable_encoder())
            ):
                state[k] = v
        return {k: v.detach().contiguous().cpu() for k, v in state.items()}

    def adapter_parameters(self) -> list[nn.Parameter]:
        params = list(self.video_params) + list(self.video_tokenizer.parameters())
        if self.time_position is not None:
            params.append(self.time_position)
        if self.tlm is not None:
            params += list(self.tlm.parameters())
        if self._trainable_encoder():
            params += list(self.frame_encoder.parameters())
        return params

    def save_adapter(self, path: str | Path) -> Path:
        """``drawaudio_config.json`` + ``adapter.safetensors`` (adapter weights only), atomically."""
        from safetensors.torch import save_file

        state = self.adapter_state_dict()

        def write(tmp: Path) -> None:
            (tmp / ADAPTER_CONFIG).write_text(json.dumps(config_to_dict(self.cfg), indent=2))
            save_file(
                state, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt", "model_type": "DrawAudioAdapter"}
            )

        return atomic_write_dir(path, write)

    def load_adapter(self, path: str | Path) -> DrawAudioModel:
        path = Path(path)
        state = load_safetensors_checked(path / ADAPTER_WEIGHTS)
        expected = self.adapter_state_dict()
        check_state_dict(expected, state, source=str(path / ADAPTER_WEIGHTS))
        self.load_state_dict(state, strict=False)
        return self

    @classmethod
    def from_pretrained(
        cls, adapter_dir: str | Path, base_dir: str | Path | None = None, **cfg_changes
    ) -> DrawAudioModel:
        """Load an adapter checkpoint over its base.

        ``base_dir`` overrides the path recorded in the config; a relative recorded path is resolved
        against ``adapter_dir`` (so a shipped adapter can point at its sibling base).
        """
        adapter_dir = Path(adapter_dir)
        cfg_path = adapter_dir / ADAPTER_CONFIG
        if not cfg_path.is_file():
            raise CheckpointError(f"adapter directory {adapter_dir} lacks {ADAPTER_CONFIG}")
        cfg = DrawAudioConfig.load(cfg_path)
        if base_dir is not None:
            cfg.base.path = str(base_dir)
        for k, v in cfg_changes.items():
            setattr(cfg, k, v)
        if not cfg.base.path:
            raise CheckpointError(f"{cfg_path}: base.path is empty; pass base_dir")
        if not Path(cfg.base.path).is_absolute() and base_dir is None:
            cfg.base.path = str((adapter_dir / cfg.base.path).resolve())
        model = cls(cfg, load_base(cfg.base.path, cfg))
        return model.load_adapter(adapter_dir)

    # conditioning

    def encode_video(
        self, frames: torch.Tensor, masks: torch.Tensor | None, times: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """frames (B, F, 3, S, S) in [0, 1], masks (B, F, S, S) or None, times (F,) -> tokens (B, N, D), key mask.

        ``pixels``/``both``: the second stream sees ``frames * mask`` (black outside). ``tokens``/``both``:
        patches covered less than ``token_keep_fraction`` by the mask are removed as keys in both streams.
        """
        b, f = frames.shape[:2]
        mode = self.cfg.mam.mode
        if masks is None:
            masks = torch.ones(b, f, *frames.shape[-2:], device=frames.device)
        masks = masks.to(frames)
        masked = frames * masks[:, :, None] if mode in ("pixels", "both") else frames
        both = torch.stack([frames, masked], dim=1).flatten(0, 2)  # (B·S·F, 3, S, S)
        feats = self.frame_encoder(both)  # (B·S·F, P, E)
        if mode == "pixels" and feats.shape[1] > 1:
            feats = feats.mean(dim=1, keepdim=True)  # one token per frame (CLIP patches: mean)
        feats = feats.reshape(b, 2, f, feats.shape[1], feats.shape[2])
        tokens = self.video_tokenizer(feats, times.to(frames.device))
        if mode == "pixels":
            return tokens, None
        patch = frames.shape[-1] // round(feats.shape[3] ** 0.5)
        keep = patch_keep_mask(masks, patch, self.cfg.mam.token_keep_fraction)
        return tokens, expand_streams(keep)

    def tlm_residual(
        self, loudness: torch.Tensor | None, keep: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """(B, T') curve -> (B, C, 1, T') or None; ``keep`` (B,) zeroes dropped samples (loudness dropout)."""
        if loudness is None or self.tlm is None:
            return None
        res = self.tlm(loudness)
        if keep is not None:
            res = res * keep.to(res)[:, None, None, None]
        return res

    def token_times(self, n_tokens: int) -> torch.Tensor:
        """Frame time (seconds from the window start) of each of ``n_tokens`` video tokens, in the
        tokenizer's ``(s f p)`` order -> (n_tokens,)."""
        from fourfold.audio.io import frame_times

        times = torch.from_numpy(frame_times(self.cfg.duration, self.cfg.video.fps)).float()
        per_frame, rest = divmod(n_tokens, 2 * len(times))
        if rest or per_frame == 0:
            raise ValueError(f"{n_tokens} video tokens are not 2 streams x {len(times)} frames x patches")
        return repeat(times, "f -> (s f p)", s=2, p=per_frame)

    # denoiser

    def forward(
        self,
        x: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        video_tokens: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        loudness: torch.Tensor | None = None,
        loudness_keep: torch.Tensor | None = None,
        *,
        batch: dict | None = None,
    ):
        """x (B, C, H, T') noisy latents, t (B,), text (B, L, D), video tokens (B, N, D) [zeros = no video],
        video_mask (B, N) bool, loudness (B, T') -> the UNet's prediction (B, C, H, T').

        ``model(batch=...)`` returns :meth:`loss` instead, so a DDP-wrapped model trains through forward.
        """
        if batch is not None:
            return self.loss(batch)
        residual = self.tlm_residual(loudness, loudness_keep)  # (B, C, 1, T') or None
        if residual is not None and self.cfg.tlm.inject == "latent":
            x, residual = x + residual.to(x.dtype), None
        kwargs = {}
        if video_tokens is not None:
            kwargs = {"extra_tokens": video_tokens.to(x.dtype), "extra_mask": video_mask}
            if self.cfg.mam.time_window > 0:
                kwargs["extra_times"] = self.token_times(video_tokens.shape[1]).to(x.device)
            if self.time_position is not None:
                # only samples that have video (non-zero tokens) get the time-position map
                has_video = (video_tokens.detach().abs().amax(dim=(1, 2)) > 0).to(x.dtype)
                pos = has_video[:, None, None, None] * self.time_position[None]
                residual = pos if residual is None else residual + pos
        with inject_conv_in(self.unet, residual):
            return self.unet(
                x, t, encoder_hidden_states=encoder_hidden_states, cross_attention_kwargs=kwargs
            ).sample

    # training objective (spec §2.5)

    def loss(
        self, batch: dict, generator: torch.Generator | None = None, dropout: bool = True
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE between the UNet output and the scheduler's target (ε, x0 or v) on cached latents.

        ``batch``: ``latents`` (B, C, H, T'), ``text`` (B, L, D), ``frames`` (B, F, 3, S, S), ``masks``
        (B, F, S, S), ``times`` (F,), ``loudness`` (B, T'). Independent dropouts (ours, §2.5): text -> zero
        embedding, video -> zero tokens, loudness -> zero TLM output; ``dropout=False`` keeps every
        condition (held-out measurements). Noise and timesteps come from ``generator``.
        """
        latents = batch["latents"]
        b, dev = latents.shape[0], latents.device
        tc = self.cfg.train

        def keep(p: float) -> torch.Tensor:
            if not dropout:
                return torch.ones(b, device=dev)
            return (torch.rand(b, generator=generator) >= p).float().to(dev)

        text = batch["text"] * keep(tc.text_dropout)[:, None, None]
        times = batch["times"][0] if batch["times"].ndim == 2 else batch["times"]  # collated (B, F) -> (F,)
        tokens, key_mask = self.encode_video(batch["frames"], batch.get("masks"), times)
        tokens = tokens * keep(tc.video_dropout)[:, None, None]
        cond = {
            "encoder_hidden_states": text,
            "video_tokens": tokens,
            "video_mask": key_mask,
            "loudness": batch.get("loudness"),
            "loudness_keep": keep(self.cfg.tlm.dropout),
        }
        out = training_step(self, self.base.scheduler, latents, cond, generator=generator)
        return out.loss, {"loss": float(out.loss.detach())}
