import pytest
import torch

from fourfold.nn.attention import KVCache, causal_mask
from fourfold.nn.transformer import (
    BlockCache,
    LearnedPositions,
    SinusoidalPositions,
    TransformerBlock,
    TransformerEncoder,
)


def test_sinusoidal_positions():
    pos = SinusoidalPositions(8, max_positions=32)
    p = pos(torch.arange(5))
    assert p.shape == (5, 8)
    assert torch.allclose(p[0, 0::2], torch.zeros(4)) and torch.allclose(p[0, 1::2], torch.ones(4))
    assert pos(torch.arange(6).view(2, 3)).shape == (2, 3, 8)
    with pytest.raises(ValueError, match="max_positions"):
        pos(torch.tensor([40]))
    with pytest.raises(ValueError):
        SinusoidalPositions(7)


def test_learned_positions_are_trainable():
    pos = LearnedPositions(8, 16)
    pos(torch.arange(4)).sum().backward()
    assert pos.table.weight.grad is not None


def test_block_causality_and_cache_equivalence():
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, 32, cross_attention=True, context_dim=12).eval()
    x, ctx = torch.randn(2, 6, 16), torch.randn(2, 5, 12)
    full = block(x, mask=causal_mask(6, 6), context=ctx)
    x2 = x.clone()
    x2[:, 5] += 1.0
    assert torch.allclose(block(x2, mask=causal_mask(6, 6), context=ctx)[:, :5], full[:, :5], atol=1e-6)
    cache = BlockCache(
        self_attn=block.self_attn.empty_cache(2, 6, like=x),
        cross_attn=KVCache.from_context(*block.cross_attn.project_kv(ctx)),
    )
    steps = [block(x[:, :2], mask=causal_mask(2, 2), cache=cache)]
    for t in range(2, 6):
        steps.append(block(x[:, t : t + 1], mask=causal_mask(1, t + 1, offset=t), cache=cache))
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_block_needs_context():
    block = TransformerBlock(16, 4, 32, cross_attention=True)
    with pytest.raises(ValueError, match="context"):
        block(torch.randn(1, 2, 16))


def test_encoder_trains():
    torch.manual_seed(0)
    enc = TransformerEncoder(16, 2, 32, 2)
    x = torch.randn(3, 5, 16)
    opt = torch.optim.Adam(enc.parameters(), 1e-2)
    first = None
    for _ in range(30):
        loss = (enc(x) - 1.0).pow(2).mean()
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
