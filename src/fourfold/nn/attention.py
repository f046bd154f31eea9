"""Multi-head attention with arbitrary boolean masks, cross-attention and a key/value cache.

Axis legend: ``b`` batch, ``h`` heads, ``q`` query positions, ``k`` key positions, ``d`` head dim.

Mask convention (the one ``torch.nn.functional.scaled_dot_product_attention`` uses): a boolean tensor
broadcastable to ``(batch, heads, queries, keys)`` where ``True`` means *may attend*. Two rules that the
plain SDPA call does not give you:

* A query row whose keys are all masked returns exactly ``0`` (after the output projection), never NaN
  and never the projection bias. Masked-out streams (SongCreator's BCA "None") therefore add nothing to
  the residual path.
* Causality is always an explicit mask built by :func:`causal_mask`, aligned bottom-right: query ``i``
  of a chunk that starts at absolute position ``offset`` sees keys ``j <= offset + i``. SDPA's
  ``is_causal=True`` aligns top-left, which is wrong as soon as queries and keys differ in length
  (incremental decoding), so it is never used here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["KVCache", "MultiHeadAttention", "causal_mask", "key_padding_mask", "merge_masks"]


# helpers


def causal_mask(
    queries: int, keys: int, *, offset: int = 0, device: torch.device | None = None
) -> torch.Tensor:
    """``(queries, keys)`` boolean mask, ``True`` where key ``j <= offset + i`` (bottom-right aligned)."""
    q = torch.arange(queries, device=device)[:, None] + offset
    k = torch.arange(keys, device=device)[None, :]
    return k <= q


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """``valid`` ``(batch, keys)`` bool (``True`` = real token) -> ``(batch, 1, 1, keys)`` attention mask."""
    return rearrange(valid.bool(), "b k -> b 1 1 k")


def merge_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical AND of broadcastable boolean masks; ``None`` entries are ignored (``None`` if all are)."""
    out = None
    for m in masks:
        if m is None:
            continue
        out = m if out is None else out & m
    return out


class KVCache:
    """Preallocated key/value buffers for incremental decoding.

    Buffers have shape ``(batch, heads, capacity, head_dim)``; :meth:`append` writes new keys/values after
    the filled part and returns views of the filled prefix only, so attention never reads unfilled slots.
    Size the cache to the request (prefix + tokens to generate); overflowing raises ``ValueError``.
    A cache may also be filled once with a fixed context (``static=True``) and then only read.
    """

    def __init__(
        self,
        batch: int,
        heads: int,
        head_dim: int,
        capacity: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"KVCache capacity must be positive, got {capacity}")
        self.k = torch.zeros(batch, heads, capacity, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0
        self.static = False

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v`` ``(batch, heads, new, head_dim)``; return the filled ``(batch, heads, length, d)``."""
        if self.static:
            raise RuntimeError("this KVCache holds a fixed context and cannot be appended to")
        n = k.shape[2]
        if self.length + n > self.capacity:
            raise ValueError(f"KVCache overflow: {self.length} + {n} > capacity {self.capacity}")
        self.k[:, :, self.length : self.length + n] = k
        self.v[:, :, self.length : self.length + n] = v
        self.length += n
        return self.filled()

    def filled(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def num_elements(self) -> int:
        """Key+value elements currently held (for memory accounting)."""
        return 2 * self.k.shape[0] * self.k.shape[1] * self.length * self.k.shape[3]

    @classmethod
    def from_context(cls, k: torch.Tensor, v: torch.Tensor) -> KVCache:
        """A read-only cache holding projected keys/values of a fixed context (cross-attention)."""
        cache = cls.__new__(cls)
        cache.k, cache.v, cache.length, cache.static = k, v, k.shape[2], True
        return cache


# the module


class MultiHeadAttention(nn.Module):
    """Multi-head (self- or cross-) attention over SDPA with a boolean mask and an optional KV cache.

    Args:
        dim: model width of the queries (and output).
        heads: number of heads; ``dim`` must be divisible by it.
        kv_dim: width of the key/value source for cross-attention (default ``dim``).
        dropout: attention-probability dropout (training only).
        bias: whether the projections have biases.
    """

    def __init__(
        self, dim: int, heads: int, *, kv_dim: int | None = None, dropout: float = 0.0, bias: bool = True
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        kv_dim = kv_dim or dim
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = dropout

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``source`` ``(batch, keys, kv_dim)`` -> keys, values ``(batch, heads, keys, head_dim)``."""
        k = rearrange(self.k_proj(source), "b k (h d) -> b h k d", h=self.heads)
        v = rearrange(self.v_proj(source), "b k (h d) -> b h k d", h=self.heads)
        return k, v

    def empty_cache(self, batch: int, capacity: int, *, like: torch.Tensor) -> KVCache:
        """A cache for ``capacity`` keys on the device/dtype of ``like``."""
        return KVCache(batch, self.heads, self.head_dim, capacity, device=like.device, dtype=like.dtype)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` ``(batch, queries, dim)``; returns ``(batch, queries, dim)``.

        * ``context`` ``(batch, keys, kv_dim)``: key/value source (default ``x``, self-attention).
        * ``mask``: boolean, broadcastable to ``(batch, heads, queries, keys_total)``, ``True`` = attend,
          where ``keys_total`` counts cached keys plus the new ones.
        * ``cache``: if it holds a fixed context (:meth:`KVCache.from_context`) it is read and ``context``
          must be ``None``; otherwise the new keys/values (from ``context`` or ``x``) are appended to it
          and attention runs over everything it holds.
        """
        q = rearrange(self.q_proj(x), "b q (h d) -> b h q d", h=self.heads)
        if cache is not None and cache.static:
            if context is not None:
                raise ValueError("pass either a fixed-context cache or a context, not both")
            k, v = cache.filled()
        else:
            k, v = self.project_kv(x if context is None else context)
            if cache is not None:
                k, v = cache.append(k, v)
        dead = alive = None
        if mask is not None:
            mask = mask.to(torch.bool)
            if mask.dim() == 2:
                mask = mask[None, None]
            mask = mask.expand(q.shape[0], mask.shape[1], q.shape[2], k.shape[2])
            alive = mask.any(dim=-1, keepdim=True)  # (b, h|1, q, 1)
            # SDPA returns NaN on rows with no key; let them attend everywhere and zero them afterwards.
            mask = mask | ~alive
            dead = ~alive.any(dim=1)  # (b, q, 1): rows no head can attend from
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        if alive is not None:
            out = out * alive  # a head with no key for a row contributes nothing to it
        out = self.out_proj(rearrange(out, "b h q d -> b q (h d)"))
        if dead is not None:
            out = out.masked_fill(dead, 0.0)
        return out
