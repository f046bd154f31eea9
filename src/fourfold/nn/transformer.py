"""Pre-norm transformer blocks and position embeddings built on :mod:`fourfold.nn.attention`.

Axis legend: ``b`` batch, ``t`` positions, ``c`` model width. Masks follow
:mod:`fourfold.nn.attention` (boolean, ``True`` = may attend, broadcastable to ``(b, heads, t_q, t_k)``).

* :class:`SinusoidalPositions` (fixed, Vaswani et al. 2017) and :class:`LearnedPositions` both map
  integer positions ``(b, t)`` or ``(t,)`` to ``(..., t, c)`` vectors that are *added* to the input.
* :class:`TransformerBlock`: ``x + SA(LN x)`` -> optional ``x + CA(LN x, context)`` -> ``x + FFN(LN x)``,
  each with its own optional :class:`~fourfold.nn.attention.KVCache`.
* :class:`TransformerEncoder`: a stack of blocks with a final LayerNorm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fourfold.nn.attention import KVCache, MultiHeadAttention

__all__ = [
    "BlockCache",
    "FeedForward",
    "LearnedPositions",
    "SinusoidalPositions",
    "TransformerBlock",
    "TransformerEncoder",
]


class SinusoidalPositions(nn.Module):
    """Fixed sine/cosine position vectors; ``forward(positions)`` -> ``(*positions.shape, dim)``."""

    def __init__(self, dim: int, max_positions: int = 8192, base: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal positions need an even dim, got {dim}")
        pos = torch.arange(max_positions, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))
        table = torch.zeros(max_positions, dim)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq)
        self.register_buffer("table", table, persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        if positions.numel() and int(positions.max()) >= self.table.shape[0]:
            raise ValueError(f"position {int(positions.max())} >= max_positions {self.table.shape[0]}")
        return self.table[positions]


class LearnedPositions(nn.Module):
    """A trainable table of ``max_positions`` vectors; ``forward(positions)`` -> ``(*positions.shape, dim)``."""

    def __init__(self, dim: int, max_positions: int):
        super().__init__()
        self.table = nn.Embedding(max_positions, dim)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        if positions.numel() and int(positions.max()) >= self.table.num_embeddings:
            raise ValueError(f"position {int(positions.max())} >= max_positions {self.table.num_embeddings}")
        return self.table(positions)


class FeedForward(nn.Module):
    """``Linear(dim, ffn) -> GELU -> dropout -> Linear(ffn, dim)``; ``(b, t, dim) -> (b, t, dim)``."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class BlockCache:
    """Caches of one :class:`TransformerBlock`: growing self-attention K/V, fixed cross-attention K/V."""

    self_attn: KVCache | None = None
    cross_attn: KVCache | None = None


class TransformerBlock(nn.Module):
    """Pre-LN block: self-attention, optional cross-attention, feed-forward, each residual.

    Args:
        dim, heads, ffn_dim: width, head count, hidden width of the FFN.
        cross_attention: add a cross-attention sub-layer over a ``context`` of width ``context_dim``.
        dropout: dropout on attention probabilities and on each sub-layer output.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        *,
        dropout: float = 0.0,
        cross_attention: bool = False,
        context_dim: int | None = None,
    ):
        super().__init__()
        self.norm_sa = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, heads, dropout=dropout)
        self.cross_attn = None
        if cross_attention:
            self.norm_ca = nn.LayerNorm(dim)
            self.cross_attn = MultiHeadAttention(dim, heads, kv_dim=context_dim or dim, dropout=dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        cache: BlockCache | None = None,
    ) -> torch.Tensor:
        """``x`` ``(b, t, dim)`` -> ``(b, t, dim)``.

        ``mask`` is the self-attention mask over (cached + new) keys; ``context`` ``(b, s, context_dim)``
        and ``context_mask`` (broadcastable to ``(b, heads, t, s)``) feed the cross-attention. With a
        ``cache`` whose ``cross_attn`` is a fixed-context cache, ``context`` may be omitted.
        """
        sa_cache = cache.self_attn if cache is not None else None
        x = x + self.drop(self.self_attn(self.norm_sa(x), mask=mask, cache=sa_cache))
        if self.cross_attn is not None:
            ca_cache = cache.cross_attn if cache is not None else None
            ctx = None if (ca_cache is not None and ca_cache.static) else context
            if ctx is None and ca_cache is None:
                raise ValueError("this block has cross-attention: pass a context or a fixed-context cache")
            x = x + self.drop(self.cross_attn(self.norm_ca(x), ctx, mask=context_mask, cache=ca_cache))
        return x + self.drop(self.ffn(self.norm_ff(x)))


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerBlock` with a final LayerNorm; ``(b, t, dim) -> (b, t, dim)``."""

    def __init__(
        self, dim: int, heads: int, ffn_dim: int, layers: int, *, dropout: float = 0.0, **block_kwargs
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, ffn_dim, dropout=dropout, **block_kwargs) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask=mask, **kwargs)
        return self.norm(x)
