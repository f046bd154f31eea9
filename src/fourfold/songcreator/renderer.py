"""Stage II: semantic tokens -> audio (spec §2.5).

The paper renders with a latent-diffusion model over a 44.1 kHz waveform VAE (App A.3). This module holds
the always-available CPU path (*ours*), which predicts a log-mel and inverts it with
:func:`fourfold.audio.mel.griffin_lim`:

* :class:`TokenMelRenderer`: code + stream embedding -> ×``upsample`` repeat -> 4 Conv1d -> log-mel,
  trained with L1 on log-mels of the matching stem or mix;
* :class:`CentroidRenderer`: training-free, each code's mean log-mel patch.

Both expose ``render(tokens (b, t), kind) -> wav (b, samples)`` with ``kind`` in ``song|vocals|accompaniment``.
:func:`splice_edit` puts an edited span back into the original waveform with 20 ms crossfades, leaving the
audio outside the crossfades bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fourfold.audio.mel import MelConfig, griffin_lim, mel_spectrogram
from fourfold.nn.modeling import PretrainedModel

__all__ = [
    "KINDS",
    "CentroidRenderer",
    "RendererConfig",
    "TokenMelRenderer",
    "renderer_loss",
    "splice_edit",
]

KINDS = ("song", "vocals", "accompaniment")


@dataclass
class RendererConfig:
    codebook_size: int = 16384
    token_rate: float = 50.0  # tokens per second
    upsample: int = 4  # mel frames per token
    sample_rate: int = 24000
    n_fft: int = 1024
    win_length: int = 1024
    n_mels: int = 80
    dim: int = field(default=256, metadata={"help": "conv width"})
    kernel: int = 5
    griffin_lim_iters: int = 32

    def __post_init__(self) -> None:
        hop = self.sample_rate / (self.token_rate * self.upsample)
        if abs(hop - round(hop)) > 1e-6:
            raise ValueError(
                f"RendererConfig: sample_rate / (token_rate·upsample) = {hop} must be an integer hop length"
            )
        if self.kernel % 2 == 0:
            raise ValueError(f"RendererConfig.kernel must be odd, got {self.kernel}")

    @property
    def hop_length(self) -> int:
        return round(self.sample_rate / (self.token_rate * self.upsample))

    def mel_config(self) -> MelConfig:
        return MelConfig(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            f_max=None,
            peak_norm=None,
        )

    @classmethod
    def tiny(cls, codebook_size: int = 325) -> RendererConfig:
        return cls(
            codebook_size=codebook_size,
            token_rate=25.0,
            sample_rate=16000,
            n_mels=64,
            dim=128,
            griffin_lim_iters=16,
        )


def _kind_index(kind: str) -> int:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return KINDS.index(kind)


def _check_tokens(tokens: torch.Tensor, codebook_size: int) -> torch.Tensor:
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        raise ValueError(f"expected tokens (batch, frames), got shape {tuple(tokens.shape)}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= codebook_size:
        raise ValueError(f"token ids must be in [0, {codebook_size})")
    return tokens


class TokenMelRenderer(PretrainedModel):
    """Trainable token -> log-mel network; ``forward(tokens (b, t), kind) -> log-mel (b, n_mels, t·upsample)``."""

    config_class = RendererConfig

    def __init__(self, config: RendererConfig):
        super().__init__(config)
        c = config
        self.embed = nn.Embedding(c.codebook_size, c.dim)
        self.kind = nn.Embedding(len(KINDS), c.dim)
        self.convs = nn.ModuleList(nn.Conv1d(c.dim, c.dim, c.kernel, padding=c.kernel // 2) for _ in range(4))
        self.norms = nn.ModuleList(nn.GroupNorm(1, c.dim) for _ in range(4))
        self.out = nn.Conv1d(c.dim, c.n_mels, 1)
        # start at the log floor (silence) so an untrained renderer is quiet, not noise
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, float(np.log(1e-5)))

    def forward(self, tokens: torch.Tensor, kind: str) -> torch.Tensor:
        tokens = _check_tokens(tokens, self.config.codebook_size).to(self.embed.weight.device)
        h = self.embed(tokens) + self.kind.weight[_kind_index(kind)]
        h = rearrange(h.repeat_interleave(self.config.upsample, dim=1), "b t c -> b c t")
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = h + conv(F.gelu(norm(h)))
        return self.out(h)

    @torch.no_grad()
    def render(self, tokens: torch.Tensor, kind: str) -> torch.Tensor:
        """``(b, t)`` codes -> waveform ``(b, t·upsample·hop)`` via Griffin-Lim."""
        mel = self.forward(tokens, kind).float().cpu()
        return griffin_lim(mel, self.config.mel_config(), n_iter=self.config.griffin_lim_iters)


def renderer_loss(model: TokenMelRenderer, batch: dict) -> torch.Tensor:
    """L1 between predicted and target log-mels; ``batch``: ``tokens (b, t)``, ``mel (b, n_mels, t·up)``,
    ``kind`` (str)."""
    pred = model(batch["tokens"], batch["kind"])
    target = batch["mel"]
    n = min(pred.shape[-1], target.shape[-1])
    return F.l1_loss(pred[..., :n], target[..., :n])


class CentroidRenderer(PretrainedModel):
    """Training-free: each code renders as the mean log-mel patch ``(n_mels, upsample)`` of its frames."""

    config_class = RendererConfig

    def __init__(self, config: RendererConfig):
        super().__init__(config)
        floor = float(np.log(1e-5))
        self.register_buffer(
            "centroids", torch.full((len(KINDS), config.codebook_size, config.n_mels, config.upsample), floor)
        )

    @torch.no_grad()
    def fit(self, tokens: list[torch.Tensor], wavs: list[np.ndarray], kind: str) -> CentroidRenderer:
        """Average the log-mel patches of ``wavs`` under each code of the aligned ``tokens`` ``(t,)``."""
        c, k = self.config, _kind_index(kind)
        sums = torch.zeros(c.codebook_size, c.n_mels, c.upsample)
        counts = torch.zeros(c.codebook_size)
        for tok, wav in zip(tokens, wavs, strict=True):
            mel = mel_spectrogram(torch.as_tensor(wav, dtype=torch.float32), c.mel_config())  # (m, frames)
            t = min(len(tok), mel.shape[-1] // c.upsample)
            patches = rearrange(mel[:, : t * c.upsample], "m (t u) -> t m u", u=c.upsample)
            sums.index_add_(0, torch.as_tensor(tok[:t], dtype=torch.long), patches)
            counts.index_add_(0, torch.as_tensor(tok[:t], dtype=torch.long), torch.ones(t))
        seen = counts > 0
        self.centroids[k, seen] = sums[seen] / counts[seen, None, None]
        return self

    def forward(self, tokens: torch.Tensor, kind: str) -> torch.Tensor:
        tokens = _check_tokens(tokens, self.config.codebook_size)
        patches = self.centroids[_kind_index(kind)][tokens]  # (b, t, m, u)
        return rearrange(patches, "b t m u -> b m (t u)")

    @torch.no_grad()
    def render(self, tokens: torch.Tensor, kind: str) -> torch.Tensor:
        return griffin_lim(
            self.forward(tokens, kind), self.config.mel_config(), n_iter=self.config.griffin_lim_iters
        )


def splice_edit(
    original: np.ndarray,
    rendered: np.ndarray,
    start: int,
    end: int,
    new_end: int,
    sr: int,
    fade_s: float = 0.02,
) -> np.ndarray:
    """Replace ``original[start:end]`` by ``rendered[start:new_end]`` (samples; ``rendered`` is the whole
    edited track on the new timeline) with linear crossfades of ``fade_s`` centred on both joins.

    Outside ``[start − fade/2, end + fade/2)`` (original timeline) the output equals ``original`` exactly.
    """
    original, rendered = np.asarray(original, np.float32), np.asarray(rendered, np.float32)
    half = round(fade_s * sr / 2)
    if not 0 <= start < end <= len(original) or not start < new_end <= len(rendered):
        raise ValueError(
            f"bad splice: start={start}, end={end}, new_end={new_end} for {len(original)}/{len(rendered)} samples"
        )
    a0, a1 = max(0, start - half), min(start + half, new_end, len(original))
    b0, b1 = max(a1, new_end - half), min(len(rendered), new_end + half)
    fade_in = np.linspace(0.0, 1.0, a1 - a0, dtype=np.float32)
    head = original[:a0]
    join1 = original[a0:a1] * (1 - fade_in) + rendered[a0:a1] * fade_in
    middle = rendered[a1:b0]
    tail_start = end + (b1 - new_end)  # original samples aligned with rendered[new_end:b1]
    seg_orig = original[end - (new_end - b0) : min(len(original), tail_start)]
    n = min(b1 - b0, len(seg_orig))
    fade_out = np.linspace(1.0, 0.0, n, dtype=np.float32)
    join2 = rendered[b0 : b0 + n] * fade_out + seg_orig[:n] * (1 - fade_out)
    tail = original[end - (new_end - b0) + n :]
    return np.concatenate([head, join1, middle, join2, tail])
