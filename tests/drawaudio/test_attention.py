"""Time-local video attention: query times per layer, locality, and the base-model equivalences."""

import pytest
import torch
from diffusers.models.attention_processor import Attention

from fourfold.drawaudio.attention import TimeLocalVideoAttnProcessor, query_times


def test_query_times_follow_the_downsampled_grid():
    q = query_times(4 * 16, (16, 64), 2.56)  # latent 16 x 64 down-sampled x4 -> 4 x 16
    assert q.shape == (64,)
    torch.testing.assert_close(q[:16], (torch.arange(16) + 0.5) * 0.16)
    torch.testing.assert_close(q[16:32], q[:16])  # (h w) order: every row repeats the time axis
    with pytest.raises(ValueError, match="latent grid"):
        query_times(30, (16, 64), 2.56)


def _layer(window):
    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=16, heads=2, dim_head=8).eval()
    return attn, TimeLocalVideoAttnProcessor(attn, 1.0, latent_hw=(4, 8), duration=8.0, window=window)


def test_a_query_column_sees_only_nearby_frames():
    attn, proc = _layer(window=1.0)
    h = torch.randn(1, 32, 16)  # 4 x 8 grid, column w centred at w + 0.5 s
    text = torch.randn(1, 3, 16)
    tokens = torch.randn(1, 16, 16)  # 2 streams x 8 frames
    times = (torch.arange(8).float() + 0.5).repeat(2)  # frame f at f + 0.5 s
    base = proc(attn, h, text, extra_tokens=tokens, extra_times=times).reshape(4, 8, 16)
    edited = tokens.clone()
    edited[0, 7] += 5.0  # full-stream frame 7 (7.5 s)
    out = proc(attn, h, text, extra_tokens=edited, extra_times=times).reshape(4, 8, 16)
    changed = (out - base).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [False] * 6 + [True, True]  # only columns within 1 s of 7.5 s
    # zero tokens: exactly the text-only layer, with or without the time mask and a key mask
    zero = torch.zeros_like(tokens)
    plain = proc(attn, h, text)
    keys = torch.ones(1, 16, dtype=torch.bool)
    keys[0, :4] = False
    assert torch.equal(proc(attn, h, text, extra_tokens=zero, extra_times=times, extra_mask=keys), plain)


def test_window_zero_is_global_attention_and_key_mask_is_kept():
    attn, local = _layer(window=0.0)
    h, text, tokens = torch.randn(1, 32, 16), torch.randn(1, 3, 16), torch.randn(1, 16, 16)
    times = (torch.arange(8).float() + 0.5).repeat(2)
    from fourfold.diffusion.attention import DecoupledCrossAttnProcessor

    parent = DecoupledCrossAttnProcessor(attn, 1.0)
    parent.load_state_dict(local.state_dict())
    assert torch.equal(
        local(attn, h, text, extra_tokens=tokens, extra_times=times),
        parent(attn, h, text, extra_tokens=tokens),
    )
    _, proc = _layer(window=0.5)
    proc.load_state_dict(local.state_dict())
    keys = torch.zeros(1, 16, dtype=torch.bool)  # every key masked: the video branch adds exactly 0
    assert torch.equal(
        proc(attn, h, text, extra_tokens=tokens, extra_times=times, extra_mask=keys), parent(attn, h, text)
    )
    with pytest.raises(ValueError, match="extra_times"):
        proc(attn, h, text, extra_tokens=tokens, extra_times=times[:5])
