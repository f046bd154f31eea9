"""Time-local video cross-attention (ours): MAM's decoupled attention restricted to nearby video frames.

The frozen base UNet is a convolutional network whose queries carry no absolute time, so with global
attention over all video tokens a latent column cannot tell which frame is "now": a 935-step tiny run
learned no onset following (docs/drawaudio.md). Here a query at latent time τ attends only to video
tokens whose frame time lies within ``window`` seconds of τ, which aligns video and audio by
construction, as the TLM curve is aligned by construction. The mask is added to MAM's key mask (the
formula of spec §2.3 is unchanged: masked keys get −∞, fully masked rows add 0), so zero video tokens
still give exactly the base model and ``tokens`` mode still removes masked-out patches.

Query times: a cross-attention layer sees its hidden states flattened as ``(B, H_l·W_l, C)`` in
``(h w)`` order, where ``H_l × W_l`` is the latent grid ``(mel bins, frames)`` down-sampled by the
block's factor; ``W_l`` follows from ``N = H_l·W_l`` and the latent aspect ratio. Column ``w`` covers
``[w, w + 1) · duration / W_l`` seconds; its centre is compared with the token times.
"""

from __future__ import annotations

import math

import torch
from einops import repeat
from torch import nn

from fourfold.diffusion.attention import DecoupledCrossAttnProcessor, IgnoreKwargs, set_processors

__all__ = ["VIDEO_KWARGS", "TimeLocalVideoAttnProcessor", "attach_video_attention", "query_times"]

VIDEO_KWARGS = ("extra_tokens", "extra_mask", "extra_times")


def query_times(n: int, latent_hw: tuple[int, int], duration: float) -> torch.Tensor:
    """Centre time (seconds) of each of ``n`` flattened ``(h w)`` query positions -> (n,).

    Raises if ``n`` is not a down-sampled copy of the ``latent_hw`` grid.
    """
    h0, w0 = latent_hw
    w = round(math.sqrt(n * w0 / h0))
    if w <= 0 or n % w or w0 % w or h0 % (n // w) or w0 // w != h0 // (n // w):
        raise ValueError(f"{n} query positions are not a down-sampled {h0}x{w0} latent grid")
    centres = (torch.arange(w, dtype=torch.float32) + 0.5) * (duration / w)
    return repeat(centres, "w -> (h w)", h=n // w)


class TimeLocalVideoAttnProcessor(DecoupledCrossAttnProcessor):
    """:class:`DecoupledCrossAttnProcessor` whose video keys are limited to ``|t_query − t_token| ≤ window``.

    Extra call input ``extra_times``: (M,) or (B, M) frame time of every video token, seconds from the
    window start. Without it (or with ``window <= 0``) this is exactly the parent processor.
    """

    def __init__(
        self,
        attn: nn.Module,
        scale: float,
        latent_hw: tuple[int, int],
        duration: float,
        window: float,
    ) -> None:
        super().__init__(attn, scale)
        self.latent_hw, self.duration, self.window = tuple(latent_hw), float(duration), float(window)

    def local_mask(self, n: int, token_times: torch.Tensor) -> torch.Tensor:
        """(n,) queries x token times (M,) or (B, M) -> bool (1|B, n, M), True = attend."""
        q = query_times(n, self.latent_hw, self.duration).to(token_times.device)
        tt = token_times.float()
        tt = tt[None] if tt.ndim == 1 else tt
        # half a column of slack so every query column keeps at least its nearest frame
        slack = 0.5 * self.duration / round(math.sqrt(n * self.latent_hw[1] / self.latent_hw[0]))
        return (q[None, :, None] - tt[:, None, :]).abs() <= max(self.window, slack) + 1e-6

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        extra_tokens: torch.Tensor | None = None,
        extra_mask: torch.Tensor | None = None,
        extra_times: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if extra_tokens is not None and extra_times is not None and self.window > 0:
            n = hidden_states.shape[1] if hidden_states.ndim == 3 else math.prod(hidden_states.shape[2:])
            if extra_times.shape[-1] != extra_tokens.shape[1]:
                raise ValueError(
                    f"extra_times has {extra_times.shape[-1]} entries for {extra_tokens.shape[1]} video tokens"
                )
            local = self.local_mask(n, extra_times.to(hidden_states.device))  # (1|B, N, M)
            if extra_mask is None:
                extra_mask = local.expand(extra_tokens.shape[0], -1, -1)
            else:
                key = extra_mask.to(device=local.device, dtype=torch.bool)
                extra_mask = (key[:, None, :] if key.ndim == 2 else key) & local
        return super().__call__(
            attn, hidden_states, encoder_hidden_states, attention_mask, temb, extra_tokens, extra_mask
        )


def attach_video_attention(
    unet: nn.Module, scale: float, latent_hw: tuple[int, int], duration: float, window: float
) -> list[nn.Parameter]:
    """Install :class:`TimeLocalVideoAttnProcessor` in every cross-attention of ``unet``.

    ``window <= 0`` gives global attention (the literal spec §2.3 form). Self-attention processors are
    wrapped to ignore the video inputs. Returns the new K'/V' parameters (same state-dict names as
    :func:`fourfold.diffusion.attach_decoupled_cross_attention`, so checkpoints load either way).
    """
    from fourfold.diffusion.attention import attention_modules

    if not attention_modules(unet, "cross"):
        raise ValueError(
            f"{type(unet).__name__} has no cross-attention layers to attach video tokens to "
            "(an AudioLDM-style UNet conditions through a class embedding instead)"
        )

    def factory(name: str, attn: nn.Module, old):
        if isinstance(old, TimeLocalVideoAttnProcessor):
            return old
        return TimeLocalVideoAttnProcessor(attn, scale, latent_hw, duration, window)

    set_processors(unet, factory, which="cross", ignore_kwargs=VIDEO_KWARGS)
    for module in attention_modules(unet, "self").values():
        proc = module.processor
        if isinstance(proc, IgnoreKwargs) and not set(VIDEO_KWARGS) <= set(proc.names):
            module.set_processor(IgnoreKwargs(proc.inner, VIDEO_KWARGS))
    return [p for m in attention_modules(unet, "cross").values() for p in m.processor.parameters()]
