"""Attention-processor utilities: the one place systems plug branches and masks into diffusers UNets.

diffusers' ``Attention`` modules own the projections and delegate the computation to a swappable
processor (``unet.attn_processors`` / ``unet.set_attn_processor``). :func:`set_processors` replaces
selected processors through a factory; processors that are ``nn.Module`` become sub-modules of their
``Attention``, so their parameters appear in ``unet.parameters()`` and ``state_dict()``.

Extra per-call inputs travel in ``cross_attention_kwargs``. diffusers hands a processor only the keyword
arguments its ``__call__`` names (others are dropped with a warning on every call), so processors that do
not use an extra input are wrapped in :class:`IgnoreKwargs`, which names and discards it.

:class:`DecoupledCrossAttnProcessor` is IP-Adapter-style decoupled cross-attention (Ye et al. 2023,
arXiv 2308.06721, Eq. 5) with a boolean key mask, as Draw an Audio's MAM needs (spec §2.3)::

    Z = to_out( Attn(Q, K_t, V_t) + λ · Attn(Q, K_e, V_e; mask) )

Q, K_t, V_t are the frozen base projections of the hidden states and text tokens; K_e = W'_k e,
V_e = W'_v e are new bias-free projections of the extra tokens ``e``, initialised as copies of W_k, W_v.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

__all__ = [
    "DecoupledCrossAttnProcessor",
    "IgnoreKwargs",
    "attach_decoupled_cross_attention",
    "attention_modules",
    "set_processors",
]


def attention_modules(unet: nn.Module, which: str = "cross") -> dict[str, nn.Module]:
    """``{processor name: Attention module}`` for ``which`` ∈ {"cross", "self", "all"}.

    Names are diffusers' (``down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor``), found by
    walking the modules, so any model holding diffusers ``Attention`` layers works (UNets, DiTs, VAEs).
    Cross-attention = an ``Attention`` whose ``is_cross_attention`` is set (``attn2`` in a UNet).
    """
    if which not in ("cross", "self", "all"):
        raise ValueError(f"which must be 'cross', 'self' or 'all', got {which!r}")
    out = {}
    for name, module in unet.named_modules():
        if not (hasattr(module, "set_processor") and hasattr(module, "processor")):
            continue  # not a diffusers Attention
        cross = bool(getattr(module, "is_cross_attention", False))
        if which == "all" or (which == "cross") == cross:
            out[f"{name}.processor"] = module
    return out


class _KwargsSignature:
    """A stand-in ``__call__`` that only carries a signature naming ``names`` (picklable, copyable)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    @property
    def __signature__(self) -> inspect.Signature:
        p = inspect.Parameter
        params = [p("attn", p.POSITIONAL_OR_KEYWORD), p("hidden_states", p.POSITIONAL_OR_KEYWORD)]
        params += [
            p(n, p.POSITIONAL_OR_KEYWORD, default=None)
            for n in ("encoder_hidden_states", "attention_mask", "temb")
        ]
        params += [p(n, p.KEYWORD_ONLY, default=None) for n in self.names]
        return inspect.Signature([*params, p("kwargs", p.VAR_KEYWORD)])

    def __call__(self, *args, **kwargs):  # never called: calls go through IgnoreKwargs.__call__
        raise TypeError("_KwargsSignature only describes a signature")


class IgnoreKwargs:
    """Wrap a processor so it accepts (and ignores) named extra ``cross_attention_kwargs``.

    diffusers reads ``inspect.signature(processor.__call__)`` to decide which kwargs to pass; the
    instance attribute ``__call__`` (a :class:`_KwargsSignature`) answers that lookup with ``names``
    included, while calling the wrapper still runs the class's ``__call__``. Copyable and picklable.
    """

    def __init__(self, processor: Any, names: Sequence[str]) -> None:
        self.inner = processor
        self.names = tuple(names)
        self.__call__ = _KwargsSignature(self.names)  # shadows the method for attribute lookup only

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs
    ):
        for name in self.names:
            kwargs.pop(name, None)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


def set_processors(
    unet: nn.Module,
    factory: Callable[[str, nn.Module, Any], Any],
    *,
    which: str = "cross",
    ignore_kwargs: Sequence[str] = (),
) -> dict[str, Any]:
    """Replace the processors selected by ``which`` with ``factory(name, attn_module, old_processor)``.

    The factory may return the old processor (or ``None``) to keep it. Processors not replaced are
    wrapped in :class:`IgnoreKwargs` for ``ignore_kwargs`` (the extra inputs only the new processors use).
    Returns ``{name: new processor}`` for the replaced ones.
    """
    selected = attention_modules(unet, which)
    installed = {}
    for name, module in attention_modules(unet, "all").items():
        old = module.processor
        new = factory(name, module, old) if name in selected else None
        if new is not None and new is not old:
            module.set_processor(new)
            installed[name] = new
        elif ignore_kwargs and not isinstance(old, IgnoreKwargs | nn.Module):
            # (a processor that is an nn.Module is left as is: wrapping would unregister its parameters)
            module.set_processor(IgnoreKwargs(old, ignore_kwargs))
    return installed


class DecoupledCrossAttnProcessor(nn.Module):
    """Cross-attention plus a second, trainable attention over extra tokens (IP-Adapter style).

    Call inputs (through ``cross_attention_kwargs``): ``extra_tokens`` ``(batch, M, cross_dim)`` and
    optional ``extra_mask`` boolean ``(batch, M)`` or ``(batch, N, M)``, True = attend. Masked keys get
    −∞; a query row with every key masked adds exactly 0 (never NaN). Without ``extra_tokens``, or with
    all-zero tokens, the output equals the base processor's bit for bit (K_e = V_e = 0 and no biases).
    """

    def __init__(self, attn: nn.Module, scale: float = 1.0, cross_attention_dim: int | None = None) -> None:
        super().__init__()
        in_dim = cross_attention_dim or attn.to_k.in_features
        inner = attn.to_k.out_features
        self.scale = scale
        self.to_k_extra = nn.Linear(in_dim, inner, bias=False)
        self.to_v_extra = nn.Linear(in_dim, attn.to_v.out_features, bias=False)
        if in_dim == attn.to_k.in_features:  # start from the text projections (IP-Adapter init)
            with torch.no_grad():
                self.to_k_extra.weight.copy_(attn.to_k.weight)
                self.to_v_extra.weight.copy_(attn.to_v.weight)

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        extra_tokens: torch.Tensor | None = None,
        extra_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # Mirrors diffusers' AttnProcessor2_0 step for step, so the text path is bit-identical to it.
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            _, _, height, width = hidden_states.shape
            hidden_states = rearrange(hidden_states, "b c h w -> b (h w) c")
        batch, seq = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape[:2]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        heads = attn.heads
        split = lambda x: rearrange(x, "b n (h d) -> b h n d", h=heads)  # noqa: E731
        query, key, value = split(query), split(key), split(value)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        if extra_tokens is not None:
            out = out + self.scale * self._extra_attention(attn, query, extra_tokens, extra_mask)
        out = rearrange(out, "b h n d -> b n (h d)").to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = rearrange(out, "b (h w) c -> b c h w", h=height, w=width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _extra_attention(
        self, attn: nn.Module, query: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``softmax(Q K_eᵀ/√d + mask) V_e`` ``(batch, heads, N, d)``; fully masked rows give 0."""
        if tokens.ndim != 3 or tokens.shape[0] != query.shape[0]:
            raise ValueError(
                f"extra_tokens must be (batch={query.shape[0]}, M, dim), got {tuple(tokens.shape)}"
            )
        key = rearrange(self.to_k_extra(tokens), "b m (h d) -> b h m d", h=attn.heads)
        value = rearrange(self.to_v_extra(tokens), "b m (h d) -> b h m d", h=attn.heads)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if mask is None:
            return F.scaled_dot_product_attention(query, key, value)
        mask = mask.to(device=query.device, dtype=torch.bool)
        if mask.shape[-1] != tokens.shape[1] or mask.shape[0] != tokens.shape[0] or mask.ndim not in (2, 3):
            raise ValueError(
                f"extra_mask must be (batch, M) or (batch, N, M) for M={tokens.shape[1]}, got {tuple(mask.shape)}"
            )
        mask = mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]  # (b, 1, n|1, m)
        has_key = mask.any(dim=-1, keepdim=True)  # rows with nothing to attend to
        safe = mask | ~has_key  # SDPA over an all-masked row would give NaN
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=safe)
        return out * has_key.to(out.dtype)


def attach_decoupled_cross_attention(
    unet: nn.Module, scale: float = 1.0, cross_attention_dim: int | None = None
) -> list[nn.Parameter]:
    """Install :class:`DecoupledCrossAttnProcessor` in every cross-attention of ``unet``.

    Raises if the model has no cross-attention (e.g. an AudioLDM UNet that takes CLAP as a class
    embedding). Self-attention processors learn to ignore ``extra_tokens``/``extra_mask``. Calling it again
    keeps the installed branches. Returns their trainable parameters (the K'/V' projections).
    """
    if not attention_modules(unet, "cross"):
        raise ValueError(
            f"{type(unet).__name__} has no cross-attention layers to attach extra tokens to "
            "(an AudioLDM-style UNet conditions through a class embedding instead)"
        )

    def factory(name: str, attn: nn.Module, old: Any) -> Any:
        if isinstance(old, DecoupledCrossAttnProcessor):  # attaching twice keeps the (trained) branch
            return old
        return DecoupledCrossAttnProcessor(attn, scale, cross_attention_dim)

    set_processors(unet, factory, which="cross", ignore_kwargs=("extra_tokens", "extra_mask"))
    processors = [m.processor for m in attention_modules(unet, "cross").values()]
    return [p for proc in processors for p in proc.parameters()]
