"""BEST-RQ semantic tokenizer (App A.2; Chiu et al. 2022, arXiv 2202.01855), spec §2.2.

Axis legend: ``b`` batch, ``t`` frames (50 Hz at paper size), ``m`` mel bins, ``c`` encoder width.

* Features: log-mel from :meth:`fourfold.audio.MelConfig.bestrq` (80 bins, 24 kHz, hop 480), normalised
  per bin with global statistics kept as buffers (prevents collapse; not a per-frame LayerNorm).
* Random-projection quantiser: ``A (m×16)`` Xavier-normal and ``C (1024×16)`` N(0, 1), frozen buffers drawn
  from ``rpq_seed``; a frame's label is ``argmin_i ‖l2n(C_i) − l2n(Aᵀx)‖``.
* Pretraining: spans of 400 ms, each frame starting one with p = 0.01; masked frames are replaced by noise
  of std 0.1 (the encoder input is the *features*, never the labels); CE on the masked frames only.
* Encoder: ``Linear(m→c)`` + sinusoidal positions, then Conformer blocks.
* Tokens (:class:`SemanticVQ`): a ``c→32→c`` bottleneck with an EMA codebook (decay 0.99, k-means init)
  on the output of layer ``token_layer`` (14 of 24), trained with MSE + 0.25 × commitment, encoder frozen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fourfold.audio.mel import MelConfig, mel_spectrogram
from fourfold.nn.attention import MultiHeadAttention, key_padding_mask
from fourfold.nn.modeling import PretrainedModel
from fourfold.nn.transformer import FeedForward, SinusoidalPositions

__all__ = [
    "BestRQ",
    "BestRQConfig",
    "ConformerBlock",
    "SemanticTokenizer",
    "SemanticVQ",
    "SemanticVQConfig",
    "bestrq_loss",
    "span_mask",
]


@dataclass
class BestRQConfig:
    sample_rate: int = field(default=24000, metadata={"help": "Hz (App A.2)"})
    hop_length: int = field(default=480, metadata={"help": "samples per frame: 50 Hz at 24 kHz"})
    win_length: int = field(default=1920, metadata={"help": "analysis window (ours)"})
    n_fft: int = 2048
    n_mels: int = field(default=80, metadata={"help": "mel bins (App A.2)"})
    codebook_size: int = field(default=1024, metadata={"help": "RPQ codebook entries"})
    codebook_dim: int = field(default=16, metadata={"help": "RPQ code dimension"})
    rpq_seed: int = field(default=0, metadata={"help": "seed of the frozen projection and codebook"})
    dim: int = field(default=1024, metadata={"help": "Conformer width (ours, ≈0.6B total)"})
    layers: int = 24
    heads: int = 16
    ffn_dim: int = 4096
    conv_kernel: int = field(default=31, metadata={"help": "depthwise conv kernel (Conformer default)"})
    dropout: float = 0.1
    token_layer: int = field(default=14, metadata={"help": "layer whose output feeds the VQ (1-based)"})
    mask_prob: float = field(default=0.01, metadata={"help": "per-frame span-start probability"})
    mask_seconds: float = field(default=0.4, metadata={"help": "masked span length (s)"})
    mask_noise_std: float = field(default=0.1, metadata={"help": "std of the noise replacing masked frames"})
    max_frames: int = 3000

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"BestRQConfig.dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not 1 <= self.token_layer <= self.layers:
            raise ValueError(
                f"BestRQConfig.token_layer must be in [1, layers={self.layers}], got {self.token_layer}"
            )
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"BestRQConfig.mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"BestRQConfig.conv_kernel must be odd, got {self.conv_kernel}")

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def span_frames(self) -> int:
        return max(1, round(self.mask_seconds * self.frame_rate))

    def mel_config(self) -> MelConfig:
        return MelConfig.bestrq().replace(
            sample_rate=self.sample_rate,
            hop_length=self.hop_length,
            win_length=self.win_length,
            n_fft=self.n_fft,
            n_mels=self.n_mels,
        )

    @classmethod
    def paper(cls) -> BestRQConfig:
        return cls()

    @classmethod
    def tiny(cls) -> BestRQConfig:
        return cls(
            sample_rate=16000,
            hop_length=640,
            win_length=1280,
            n_fft=2048,
            n_mels=64,
            codebook_size=256,
            dim=96,
            layers=2,
            heads=4,
            ffn_dim=192,
            conv_kernel=7,
            dropout=0.0,
            token_layer=2,
            max_frames=1000,
        )


def span_mask(
    batch: int, frames: int, *, prob: float, span: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """BEST-RQ masking ``(batch, frames)`` bool: each frame starts a ``span``-frame masked run with ``prob``.

    A row that drew no start gets one at a random frame (*ours*) so every clip contributes to the loss.
    """
    starts = torch.rand(batch, frames, generator=generator) < prob
    empty = ~starts.any(dim=1)
    if empty.any():
        idx = torch.randint(0, frames, (int(empty.sum()),), generator=generator)
        starts[empty.nonzero()[:, 0], idx] = True
    # a frame is masked if any of the previous `span` frames (itself included) starts a run
    padded = F.pad(starts.float()[:, None], (span - 1, 0))
    return F.max_pool1d(padded, span, stride=1)[:, 0] > 0


class ConformerBlock(nn.Module):
    """Conformer block (Gulati et al. 2020): ½FFN, MHSA, conv module, ½FFN, LayerNorm; ``(b, t, c)``.

    The conv module's norm is a LayerNorm rather than BatchNorm (*ours*: steady with small batches).
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, kernel: int, dropout: float):
        super().__init__()
        self.ff1_norm, self.ff1 = nn.LayerNorm(dim), FeedForward(dim, ffn_dim, dropout)
        self.attn_norm, self.attn = nn.LayerNorm(dim), MultiHeadAttention(dim, heads, dropout=dropout)
        self.conv_norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.depthwise_norm = nn.LayerNorm(dim)
        self.pointwise_out = nn.Conv1d(dim, dim, 1)
        self.ff2_norm, self.ff2 = nn.LayerNorm(dim), FeedForward(dim, ffn_dim, dropout)
        self.out_norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + 0.5 * self.drop(self.ff1(self.ff1_norm(x)))
        x = x + self.drop(self.attn(self.attn_norm(x), mask=mask))
        h = rearrange(self.conv_norm(x), "b t c -> b c t")
        h = F.glu(self.pointwise_in(h), dim=1)
        h = rearrange(self.depthwise(h), "b c t -> b t c")
        h = rearrange(F.silu(self.depthwise_norm(h)), "b t c -> b c t")
        x = x + self.drop(rearrange(self.pointwise_out(h), "b c t -> b t c"))
        x = x + 0.5 * self.drop(self.ff2(self.ff2_norm(x)))
        return self.out_norm(x)


class BestRQ(PretrainedModel):
    """BEST-RQ encoder with its frozen random-projection quantiser and feature statistics."""

    config_class = BestRQConfig

    def __init__(self, config: BestRQConfig):
        super().__init__(config)
        c = config
        g = torch.Generator().manual_seed(c.rpq_seed)
        proj = torch.empty(c.n_mels, c.codebook_dim)
        std = math.sqrt(2.0 / (c.n_mels + c.codebook_dim))  # Xavier-normal
        proj.normal_(0.0, std, generator=g)
        codebook = torch.randn(c.codebook_size, c.codebook_dim, generator=g)
        # Frozen by being buffers: no optimizer ever sees them, and they are saved with the weights.
        self.register_buffer("rpq_projection", proj)
        self.register_buffer("rpq_codebook", codebook)
        self.register_buffer("feature_mean", torch.zeros(c.n_mels))
        self.register_buffer("feature_std", torch.ones(c.n_mels))
        self.input_proj = nn.Linear(c.n_mels, c.dim)
        self.positions = SinusoidalPositions(c.dim, c.max_frames)
        self.blocks = nn.ModuleList(
            ConformerBlock(c.dim, c.heads, c.ffn_dim, c.conv_kernel, c.dropout) for _ in range(c.layers)
        )
        self.head = nn.Linear(c.dim, c.codebook_size)

    # features and labels

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveform ``(b, samples)`` at ``config.sample_rate`` -> un-normalised log-mel ``(b, t, m)``."""
        return rearrange(mel_spectrogram(wav, self.config.mel_config()), "b m t -> b t m")

    @torch.no_grad()
    def fit_normalizer(self, mels: torch.Tensor | list[torch.Tensor]) -> None:
        """Set the per-bin mean/std buffers from log-mels ``(b, t, m)`` (or a list of ``(t, m)``)."""
        flat = torch.cat(
            [m.reshape(-1, self.config.n_mels) for m in (mels if isinstance(mels, list) else [mels])]
        )
        self.feature_mean.copy_(flat.mean(0))
        self.feature_std.copy_(flat.std(0).clamp_min(1e-5))

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel ``(b, t, m)``."""
        return (self.log_mel(wav) - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def rpq_labels(self, feats: torch.Tensor) -> torch.Tensor:
        """``(b, t, m)`` normalised features -> ``(b, t)`` labels in ``[0, codebook_size)``."""
        z = F.normalize(feats.float() @ self.rpq_projection, dim=-1)
        cb = F.normalize(self.rpq_codebook, dim=-1)
        # ‖a − b‖² = 2 − 2 a·b for unit vectors: the nearest code is the most similar one
        return (z @ cb.T).argmax(-1)

    # encoder

    def encode(
        self,
        feats: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        num_layers: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Run ``num_layers`` (default all) Conformer blocks over ``feats`` ``(b, t, m)`` -> ``(b, t, c)``.

        ``mask`` ``(b, t)`` bool marks frames replaced by N(0, ``mask_noise_std``) noise; ``valid`` marks
        real (non-padding) frames for attention.
        """
        if mask is not None:
            noise = (
                torch.randn(feats.shape, generator=generator, device=feats.device)
                * self.config.mask_noise_std
            )
            feats = torch.where(mask[..., None], noise.to(feats.dtype), feats)
        h = self.input_proj(feats) + self.positions(torch.arange(feats.shape[1], device=feats.device))
        attn_mask = key_padding_mask(valid) if valid is not None else None
        for block in self.blocks[: num_layers or len(self.blocks)]:
            h = block(h, attn_mask)
        return h

    def forward(
        self, feats: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Masked-prediction logits ``(b, t, codebook_size)``."""
        return self.head(self.encode(feats, mask=mask, valid=valid))

    def embed_for_tokens(self, feats: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Output of layer ``token_layer`` without masking ``(b, t, c)``: the VQ's input."""
        return self.encode(feats, valid=valid, num_layers=self.config.token_layer)


def bestrq_loss(
    model: BestRQ, feats: torch.Tensor, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Masked CE of BEST-RQ on normalised features ``(b, t, m)`` (labels from the *unmasked* features)."""
    labels = model.rpq_labels(feats)
    mask = span_mask(
        feats.shape[0],
        feats.shape[1],
        prob=model.config.mask_prob,
        span=model.config.span_frames,
        generator=generator,
    ).to(feats.device)
    logits = model(feats, mask)
    return F.cross_entropy(logits[mask], labels[mask])


@dataclass
class SemanticVQConfig:
    input_dim: int = field(default=1024, metadata={"help": "BEST-RQ width"})
    codebook_size: int = field(default=16384, metadata={"help": "semantic codes (App A.2)"})
    code_dim: int = field(default=32, metadata={"help": "bottleneck / code dimension"})
    decay: float = field(default=0.99, metadata={"help": "EMA decay of the codebook (ours)"})
    commitment: float = field(default=0.25, metadata={"help": "commitment weight (ours)"})
    kmeans_iters: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.decay < 1:
            raise ValueError(f"SemanticVQConfig.decay must be in (0, 1), got {self.decay}")

    @classmethod
    def paper(cls) -> SemanticVQConfig:
        return cls()

    @classmethod
    def tiny(cls, input_dim: int = 96) -> SemanticVQConfig:
        return cls(input_dim=input_dim, codebook_size=256, code_dim=16)


class SemanticVQ(PretrainedModel):
    """``c → code_dim → c`` bottleneck with an EMA codebook; ``tokens(h)`` gives ``(b, t)`` codes."""

    config_class = SemanticVQConfig

    def __init__(self, config: SemanticVQConfig):
        super().__init__(config)
        c = config
        self.down = nn.Linear(c.input_dim, c.code_dim)
        self.up = nn.Linear(c.code_dim, c.input_dim)
        self.register_buffer("codebook", torch.randn(c.codebook_size, c.code_dim))
        self.register_buffer("cluster_size", torch.ones(c.codebook_size))
        self.register_buffer("embed_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.tensor(False))

    def _nearest(self, z: torch.Tensor) -> torch.Tensor:
        d = z.pow(2).sum(-1, keepdim=True) - 2 * z @ self.codebook.T + self.codebook.pow(2).sum(-1)
        return d.argmin(-1)

    @torch.no_grad()
    def _kmeans_init(self, z: torch.Tensor) -> None:
        k = self.config.codebook_size
        g = torch.Generator().manual_seed(0)
        idx = (
            torch.randint(0, len(z), (k,), generator=g)
            if len(z) < k
            else torch.randperm(len(z), generator=g)[:k]
        )
        cent = z[idx].clone()
        for _ in range(self.config.kmeans_iters):
            assign = (z.pow(2).sum(-1, keepdim=True) - 2 * z @ cent.T + cent.pow(2).sum(-1)).argmin(-1)
            counts = torch.bincount(assign, minlength=k).float()
            sums = torch.zeros_like(cent).index_add_(0, assign, z)
            cent = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], cent)
        self.codebook.copy_(cent)
        self.embed_sum.copy_(cent)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    def tokens(self, h: torch.Tensor) -> torch.Tensor:
        """``(b, t, c)`` encoder states -> ``(b, t)`` codes."""
        return self._nearest(self.down(h))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns reconstruction ``(b, t, c)``, codes ``(b, t)`` and the loss (MSE + β·commitment)."""
        z = self.down(h)
        flat = z.reshape(-1, z.shape[-1])
        if self.training and not bool(self.initialized):
            self._kmeans_init(flat.detach())
        codes = self._nearest(flat)
        q = self.codebook[codes]
        if self.training:  # EMA codebook update (van den Oord et al. 2017, App A.1)
            with torch.no_grad():
                onehot = F.one_hot(codes, self.config.codebook_size).type_as(flat)
                d = self.config.decay
                self.cluster_size.mul_(d).add_(onehot.sum(0), alpha=1 - d)
                self.embed_sum.mul_(d).add_(onehot.T @ flat.detach(), alpha=1 - d)
                n = self.cluster_size.sum()
                size = (self.cluster_size + 1e-5) / (n + self.config.codebook_size * 1e-5) * n
                self.codebook.copy_(self.embed_sum / size[:, None])
        commit = F.mse_loss(flat, q.detach())
        q_st = flat + (q - flat).detach()  # straight-through
        recon = self.up(q_st.view_as(z))
        loss = F.mse_loss(recon, h.detach()) + self.config.commitment * commit
        return recon, codes.view(z.shape[:-1]), loss


class SemanticTokenizer:
    """BEST-RQ encoder + VQ: ``encode(wav, sr) -> (b, t)`` semantic codes (mix or stems alike).

    Saved as ``DIR/bestrq`` and ``DIR/vq`` (each ``config.json`` + ``model.safetensors``).
    """

    def __init__(self, encoder: BestRQ, vq: SemanticVQ):
        if vq.config.input_dim != encoder.config.dim:
            raise ValueError(f"VQ input_dim {vq.config.input_dim} != BEST-RQ width {encoder.config.dim}")
        self.encoder, self.vq = encoder.eval(), vq.eval()

    @property
    def sample_rate(self) -> int:
        return self.encoder.config.sample_rate

    @property
    def token_rate(self) -> float:
        return self.encoder.config.frame_rate

    @property
    def codebook_size(self) -> int:
        return self.vq.config.codebook_size

    @torch.no_grad()
    def encode(self, wav, sr: int) -> torch.Tensor:
        """``wav`` ``(samples,)`` or ``(b, samples)`` at ``sr`` Hz -> codes ``(b, t)``, ``t = samples' // hop``."""
        from fourfold.audio.io import resample

        wav = torch.as_tensor(wav, dtype=torch.float32)
        if wav.ndim == 1:
            wav = wav[None]
        if sr != self.sample_rate:
            wav = torch.from_numpy(resample(wav.numpy(), sr, self.sample_rate))
        feats = self.encoder.features(wav)
        return self.vq.tokens(self.encoder.embed_for_tokens(feats))

    def save_pretrained(self, directory) -> None:
        from pathlib import Path

        self.encoder.save_pretrained(Path(directory) / "bestrq")
        self.vq.save_pretrained(Path(directory) / "vq")

    @classmethod
    def from_pretrained(cls, directory) -> SemanticTokenizer:
        from pathlib import Path

        return cls(
            BestRQ.from_pretrained(Path(directory) / "bestrq"),
            SemanticVQ.from_pretrained(Path(directory) / "vq"),
        )
