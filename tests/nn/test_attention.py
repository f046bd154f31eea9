import pytest
import torch

from fourfold.nn.attention import KVCache, MultiHeadAttention, causal_mask, key_padding_mask


def _attn(**kw):
    torch.manual_seed(0)
    return MultiHeadAttention(16, 4, **kw).eval()


def test_causal_mask_is_bottom_right_aligned():
    m = causal_mask(2, 5, offset=3)
    assert m.tolist() == [[True] * 4 + [False], [True] * 5]
    assert causal_mask(3, 3).tolist() == torch.tril(torch.ones(3, 3, dtype=torch.bool)).tolist()


def test_causal_self_attention_ignores_future():
    attn = _attn()
    x = torch.randn(2, 6, 16)
    mask = causal_mask(6, 6)
    y = attn(x, mask=mask)
    x2 = x.clone()
    x2[:, 4:] += 5.0
    y2 = attn(x2, mask=mask)
    assert torch.allclose(y[:, :4], y2[:, :4], atol=1e-6)
    assert not torch.allclose(y[:, 4:], y2[:, 4:])
    # without a mask, the past does change
    assert not torch.allclose(attn(x)[:, :4], attn(x2)[:, :4])


def test_fully_masked_rows_are_exact_zero():
    attn = _attn()
    x = torch.randn(1, 3, 16)
    mask = torch.tensor([[True, False, False], [False, False, False], [True, True, True]])
    y = attn(x, mask=mask)
    assert torch.isfinite(y).all()
    assert torch.equal(y[0, 1], torch.zeros(16))
    assert y[0, 0].abs().sum() > 0
    # gradients through a dead row are finite too
    x.requires_grad_(True)
    attn(x, mask=mask).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_per_head_dead_rows_contribute_nothing():
    attn = _attn()
    x = torch.randn(1, 2, 16)
    mask = torch.ones(1, 4, 2, 2, dtype=torch.bool)
    mask[:, 1:, 0] = False  # heads 1..3 see nothing from row 0; head 0 sees both keys
    y = attn(x, mask=mask)
    # reference: head 0 attends normally, the dead heads contribute zeros before the output projection
    q = attn.q_proj(x).view(1, 2, 4, 4).transpose(1, 2)
    k, v = attn.project_kv(x)
    w = torch.softmax(q[:, 0] @ k[:, 0].transpose(-1, -2) / 2.0, dim=-1)
    head0 = (w @ v[:, 0])[:, 0]  # row 0
    merged = torch.cat([head0, torch.zeros(1, 12)], dim=-1)
    assert torch.allclose(y[0, 0], attn.out_proj(merged)[0], atol=1e-5)


def test_key_padding_mask_hides_keys():
    attn = _attn()
    x = torch.randn(2, 5, 16)
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    y = attn(x, mask=key_padding_mask(valid))
    x2 = x.clone()
    x2[1, 3:] = 100.0
    y2 = attn(x2, mask=key_padding_mask(valid))
    assert torch.allclose(y[1, :3], y2[1, :3], atol=1e-6)


def test_kv_cache_matches_full_recomputation():
    attn = _attn()
    x = torch.randn(2, 7, 16)
    full = attn(x, mask=causal_mask(7, 7))
    cache = attn.empty_cache(2, 7, like=x)
    outs = [attn(x[:, :3], mask=causal_mask(3, 3), cache=cache)]
    for t in range(3, 7):
        outs.append(attn(x[:, t : t + 1], mask=causal_mask(1, t + 1, offset=t), cache=cache))
    assert cache.length == 7
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)
    with pytest.raises(ValueError, match="overflow"):
        attn(x[:, :1], cache=cache)


def test_cross_attention_with_fixed_context_cache():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4, kv_dim=8).eval()
    x, ctx = torch.randn(2, 4, 16), torch.randn(2, 9, 8)
    ref = attn(x, ctx)
    cache = KVCache.from_context(*attn.project_kv(ctx))
    assert torch.allclose(attn(x, cache=cache), ref, atol=1e-6)
    with pytest.raises(RuntimeError):
        cache.append(*attn.project_kv(ctx))
    with pytest.raises(ValueError):
        attn(x, ctx, cache=cache)


def test_bad_head_count():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
