"""Dual-sequence language model (DSLM, §3.2–3.3, Eq 1–5, Tab 12).

Axis legend: ``b`` batch, ``s`` stream positions (both streams share them), ``l`` lyrics tokens,
``t`` frames, ``c`` model width, ``K`` codebook size.

* Lyrics encoder: embedding + sinusoidal positions + Transformer (full attention over non-PAD tokens).
* Vocal and accompaniment decoders: ``vocal_layers`` blocks each, separate weights. A block is pre-LN
  SA -> CA (lyrics) -> BCA (the other decoder) -> FFN. BCA queries come from the stream's own SA+CA output;
  keys/values come from the *other* decoder's previous-layer output (its embedding for the first block),
  so both decoders advance layer by layer in lockstep (Eq 1–3).
* Song decoder (Eq 5): ``concat(E_v, E_a) -> Linear(2c, c) -> Transformer (full attention) -> K logits``,
  read at the positions whose input is frame ``t``.
* Stream vocabulary: ``K`` codes then PAD, BOS, EOS, EDIT, MASK; stream heads predict codes or EOS
  (``K + 1`` classes), the song head codes only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fourfold.nn.attention import KVCache, MultiHeadAttention, key_padding_mask
from fourfold.nn.modeling import PretrainedModel
from fourfold.nn.transformer import FeedForward, SinusoidalPositions, TransformerEncoder
from fourfold.songcreator.config import DSLMConfig
from fourfold.songcreator.tasks import bca_masks, self_attention_mask

__all__ = ["DSLM", "IGNORE_INDEX", "DSLMBlock", "DSLMBlockCache", "dslm_loss"]

IGNORE_INDEX = -100
LYRICS_PAD = 0  # the lyrics front end's <pad>


@dataclass
class DSLMBlockCache:
    """Caches of one decoder block: SA grows, lyrics CA is fixed, BCA grows (BR) or is fixed (given stream).

    ``bca=None`` means this side attends to nothing (strategy None, or the side that ignores the other):
    its BCA output is exactly 0, so it is skipped.
    """

    sa: KVCache
    lyrics: KVCache
    bca: KVCache | None


class DSLMBlock(nn.Module):
    """One vocal or accompaniment decoder block; ``(b, s, c) -> (b, s, c)``."""

    def __init__(self, cfg: DSLMConfig):
        super().__init__()
        d, h = cfg.dim, cfg.heads
        self.norm_sa = nn.LayerNorm(d)
        self.self_attn = MultiHeadAttention(d, h, dropout=cfg.dropout)
        self.norm_ca = nn.LayerNorm(d)
        self.lyrics_attn = MultiHeadAttention(d, h, dropout=cfg.dropout)
        self.norm_bca = nn.LayerNorm(d)
        self.norm_other = nn.LayerNorm(d)  # pre-LN on the other stream's residual states (keys/values)
        self.bca = MultiHeadAttention(d, h, dropout=cfg.dropout)
        self.norm_ff = nn.LayerNorm(d)
        self.ffn = FeedForward(d, cfg.ffn_dim, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def bca_kv(self, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project the other decoder's previous-layer states ``(b, s, c)`` to BCA keys/values."""
        return self.bca.project_kv(self.norm_other(other))

    def forward(
        self,
        x: torch.Tensor,
        other: torch.Tensor | None,
        *,
        sa_mask: torch.Tensor | None,
        lyrics: torch.Tensor | None,
        lyrics_mask: torch.Tensor | None,
        bca_mask: torch.Tensor | None,
        cache: DSLMBlockCache | None = None,
    ) -> torch.Tensor:
        """Args:
        x: this stream ``(b, s_new, c)``; other: the other decoder's previous-layer output at the same
        new positions ``(b, s_new, c)`` (appended to a growing BCA cache) or ``None`` (fixed cache / no BCA).
        Masks are boolean over (cached + new) keys. Without a cache, ``bca_mask`` covers all positions.
        """
        x = x + self.drop(self.self_attn(self.norm_sa(x), mask=sa_mask, cache=cache.sa if cache else None))
        if cache is not None:
            x = x + self.drop(self.lyrics_attn(self.norm_ca(x), mask=lyrics_mask, cache=cache.lyrics))
        else:
            x = x + self.drop(self.lyrics_attn(self.norm_ca(x), lyrics, mask=lyrics_mask))
        if cache is None:
            x = x + self.drop(self.bca(self.norm_bca(x), self.norm_other(other), mask=bca_mask))
        elif cache.bca is not None:
            ctx = None if cache.bca.static else self.norm_other(other)
            x = x + self.drop(self.bca(self.norm_bca(x), ctx, mask=bca_mask, cache=cache.bca))
        return x + self.drop(self.ffn(self.norm_ff(x)))


class DSLM(PretrainedModel):
    """The dual-sequence language model. See the module docstring; training batches are described in
    :meth:`forward`, generation lives in :mod:`fourfold.songcreator.generate`."""

    config_class = DSLMConfig

    def __init__(self, config: DSLMConfig):
        super().__init__(config)
        c = config
        self.positions = SinusoidalPositions(c.dim, max(c.max_positions, c.max_lyrics_tokens))
        self.lyrics_embed = nn.Embedding(c.lyrics_vocab_size, c.dim, padding_idx=LYRICS_PAD)
        self.lyrics_encoder = TransformerEncoder(
            c.dim, c.heads, c.ffn_dim, c.lyrics_layers, dropout=c.dropout
        )
        self.vocal_embed = nn.Embedding(c.stream_vocab_size, c.dim)
        self.accomp_embed = nn.Embedding(c.stream_vocab_size, c.dim)
        self.vocal_blocks = nn.ModuleList(DSLMBlock(c) for _ in range(c.vocal_layers))
        self.accomp_blocks = nn.ModuleList(DSLMBlock(c) for _ in range(c.accomp_layers))
        self.vocal_norm = nn.LayerNorm(c.dim)
        self.accomp_norm = nn.LayerNorm(c.dim)
        self.vocal_head = nn.Linear(c.dim, c.codebook_size + 1)
        self.accomp_head = nn.Linear(c.dim, c.codebook_size + 1)
        self.song_in = nn.Linear(2 * c.dim, c.dim)
        self.song_decoder = TransformerEncoder(c.dim, c.heads, c.ffn_dim, c.song_layers, dropout=c.dropout)
        self.song_head = nn.Linear(c.dim, c.codebook_size)
        self.drop = nn.Dropout(c.dropout)

    # pieces

    def encode_lyrics(self, lyrics: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``lyrics`` ``(b, l)`` ids (0 = PAD) -> states ``(b, l, c)`` and a CA mask ``(b, 1, 1, l)``."""
        if lyrics.shape[1] > self.config.max_lyrics_tokens:
            raise ValueError(
                f"{lyrics.shape[1]} lyrics tokens > max_lyrics_tokens {self.config.max_lyrics_tokens}"
            )
        if int(lyrics.max()) >= self.config.lyrics_vocab_size:
            raise ValueError(
                f"lyrics id {int(lyrics.max())} >= lyrics_vocab_size {self.config.lyrics_vocab_size}"
            )
        valid = lyrics != LYRICS_PAD
        pos = torch.arange(lyrics.shape[1], device=lyrics.device)
        h = self.drop(self.lyrics_embed(lyrics) + self.positions(pos))
        mask = key_padding_mask(valid)
        return self.lyrics_encoder(h, mask=mask), mask

    def embed(self, tokens: torch.Tensor, stream: str, start: int = 0) -> torch.Tensor:
        """Stream ids ``(b, s)`` at absolute positions ``start..start+s-1`` -> ``(b, s, c)``."""
        if tokens.numel() and int(tokens.max()) >= self.config.stream_vocab_size:
            raise ValueError(
                f"stream token {int(tokens.max())} >= vocabulary {self.config.stream_vocab_size}"
            )
        table = self.vocal_embed if stream == "vocal" else self.accomp_embed
        pos = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        return self.drop(table(tokens) + self.positions(pos))

    def decode_streams(
        self,
        vocal: torch.Tensor,
        accomp: torch.Tensor,
        lyrics_states: torch.Tensor,
        lyrics_mask: torch.Tensor,
        *,
        vocal_causal: torch.Tensor,
        accomp_causal: torch.Tensor,
        bca: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run both decoders in lockstep over full sequences.

        Args:
            vocal, accomp: ``(b, s)`` stream ids (PAD where absent).
            vocal_causal, accomp_causal: ``(b,)`` bool SA mode per sample.
            bca: ``(b,)`` long BCA strategy codes (:data:`~fourfold.songcreator.tasks.BCA_STRATEGIES`).
        Returns:
            final normalised states ``(hv, ha)``, each ``(b, s, c)``.
        """
        if vocal.shape != accomp.shape:
            raise ValueError(f"vocal {tuple(vocal.shape)} and accompaniment {tuple(accomp.shape)} must align")
        valid_v, valid_a = vocal != self.config.pad_id, accomp != self.config.pad_id
        sa_v = self_attention_mask(vocal_causal, valid_v)
        sa_a = self_attention_mask(accomp_causal, valid_a)
        bca_v, bca_a = bca_masks(bca, valid_v, valid_a)
        hv, ha = self.embed(vocal, "vocal"), self.embed(accomp, "accomp")
        for bv, ba in zip(self.vocal_blocks, self.accomp_blocks, strict=True):
            common = {"lyrics": lyrics_states, "lyrics_mask": lyrics_mask}
            hv, ha = (
                bv(hv, ha, sa_mask=sa_v, bca_mask=bca_v, **common),
                ba(ha, hv, sa_mask=sa_a, bca_mask=bca_a, **common),
            )
        return self.vocal_norm(hv), self.accomp_norm(ha)

    def song_logits(
        self,
        hv: torch.Tensor,
        ha: torch.Tensor,
        frame_pos: torch.Tensor,
        frame_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Eq 5. ``frame_pos`` ``(b, t)``: the stream position whose input is frame ``t``.
        Returns song-code logits ``(b, t, K)``."""
        idx = rearrange(frame_pos.clamp(min=0), "b t -> b t 1").expand(-1, -1, hv.shape[-1])
        ev, ea = hv.gather(1, idx), ha.gather(1, idx)
        h = self.song_in(torch.cat([ev, ea], dim=-1))
        h = self.drop(h + self.positions(torch.arange(h.shape[1], device=h.device)))
        mask = key_padding_mask(frame_valid) if frame_valid is not None else None
        return self.song_head(self.song_decoder(h, mask=mask))

    def stream_logits(self, h: torch.Tensor, stream: str) -> torch.Tensor:
        """``(b, s, c) -> (b, s, K + 1)``: codes then EOS."""
        return (self.vocal_head if stream == "vocal" else self.accomp_head)(h)

    # training

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training/teacher-forced forward.

        ``batch`` keys: ``lyrics (b, l)``; ``vocal, accomp (b, s)`` inputs; ``vocal_causal, accomp_causal
        (b,)``; ``bca (b,)``; ``frame_pos, frame_valid (b, t)``. Returns logits ``vocal, accomp (b, s, K+1)``
        and ``song (b, t, K)``.
        """
        lyr, lyr_mask = self.encode_lyrics(batch["lyrics"])
        hv, ha = self.decode_streams(
            batch["vocal"],
            batch["accomp"],
            lyr,
            lyr_mask,
            vocal_causal=batch["vocal_causal"],
            accomp_causal=batch["accomp_causal"],
            bca=batch["bca"],
        )
        return {
            "vocal": self.stream_logits(hv, "vocal"),
            "accomp": self.stream_logits(ha, "accomp"),
            "song": self.song_logits(hv, ha, batch["frame_pos"], batch["frame_valid"]),
        }


def dslm_loss(model: DSLM, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """L = CE_vocal + CE_accomp + CE_song (§3.4, weights 1). Targets use :data:`IGNORE_INDEX` where no loss
    applies; ``vocal_target, accomp_target (b, s)`` hold codes or EOS (class ``K``), ``song_target (b, t)``."""
    out = model(batch)
    parts = {}
    for name in ("vocal", "accomp", "song"):
        target = batch[f"{name}_target"]
        if (target != IGNORE_INDEX).any():
            parts[name] = F.cross_entropy(
                out[name].flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX
            )
        else:
            parts[name] = out[name].sum() * 0.0  # keeps the graph (DDP) when a batch has no such targets
    loss = parts["vocal"] + parts["accomp"] + parts["song"]
    return loss, {f"ce_{k}": float(v.detach()) for k, v in parts.items()}
