"""Chained CFG equals its formula; guidance 1 equals the conditional model; decoupled attention properties."""

import copy
import logging
import pickle

import pytest
import torch

from fourfold.diffusion import (
    IgnoreKwargs,
    attach_decoupled_cross_attention,
    attention_modules,
    combine_guidance,
    dual_cfg,
    guided_prediction,
    joint_cfg,
    make_scheduler,
    sample,
    set_processors,
)


class MockEps(torch.nn.Module):
    """ε(x, t; text, video) = x·0.1 + text + 2·video: distinct per branch, linear for exact checks."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x, t, text, video):
        self.batches.append(x.shape[0])
        return x * 0.1 + text + 2 * video


def test_dual_cfg_equals_formula_in_one_batched_forward():
    m, x = MockEps(), torch.randn(2, 3)
    text, video, zero = torch.randn(2, 3), torch.randn(2, 3), torch.zeros(2, 3)
    e = lambda tx, vd: m(x, 0, tx, vd)  # noqa: E731
    branches, scales = dual_cfg(
        {"text": zero, "video": zero},
        {"text": zero, "video": video},
        {"text": text, "video": video},
        2.0,
        5.0,
    )
    m.batches.clear()
    got = guided_prediction(m, x, 5, branches, scales)
    assert m.batches == [6]  # one 3B forward
    want = e(zero, zero) + 2.0 * (e(zero, video) - e(zero, zero)) + 5.0 * (e(text, video) - e(zero, video))
    torch.testing.assert_close(got, want)
    # s_v = s_t = s is joint CFG
    jb, js = joint_cfg(branches[0], branches[2], 4.0)
    torch.testing.assert_close(
        guided_prediction(m, x, 5, branches, [4.0, 4.0]), guided_prediction(m, x, 5, jb, js)
    )
    torch.testing.assert_close(guided_prediction(m, x, 5, branches, scales, batched=False), want)


def test_guidance_one_is_the_conditional_prediction():
    m, x = MockEps(), torch.randn(2, 3)
    c, u = (
        {"text": torch.randn(2, 3), "video": torch.randn(2, 3)},
        {"text": torch.zeros(2, 3), "video": torch.zeros(2, 3)},
    )
    torch.testing.assert_close(guided_prediction(m, x, 1, *joint_cfg(u, c, 1.0)), m(x, 1, **c))
    assert torch.equal(combine_guidance([torch.ones(1), torch.full((1,), 3.0)], [0.0]), torch.ones(1))


def test_branches_must_agree():
    m, x = MockEps(), torch.randn(2, 3)
    with pytest.raises(ValueError, match="video"):
        guided_prediction(m, x, 0, [{"text": x, "video": None}, {"text": x, "video": x}], [1.0])
    with pytest.raises(ValueError, match="scales"):
        guided_prediction(m, x, 0, [{"text": x, "video": x}] * 2, [])


def test_sampling_loop_with_guidance_one_equals_conditional_loop(tiny_unet):
    text = torch.randn(2, 5, 8)
    cond, uncond = {"encoder_hidden_states": text}, {"encoder_hidden_states": torch.zeros_like(text)}
    for name in ("ddim", "dpm++"):
        run = lambda branches, scales, name=name: sample(  # noqa: E731
            tiny_unet,
            make_scheduler(name),
            branches,
            scales,
            shape=(2, 4, 8, 16),
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(0),
        )
        plain = run([cond], [])
        torch.testing.assert_close(run(*joint_cfg(uncond, cond, 1.0)), plain, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(run(*joint_cfg(uncond, cond, 4.0)), plain, atol=1e-3)
        assert plain.shape == (2, 4, 8, 16) and torch.isfinite(plain).all()


def test_decoupled_attention_zero_tokens_give_the_base_and_masks_hold(tiny_unet, caplog):
    x, t, text = torch.randn(2, 4, 8, 16), torch.tensor(10), torch.randn(2, 5, 8)
    with torch.no_grad():
        base = tiny_unet(x, t, encoder_hidden_states=text).sample
    params = attach_decoupled_cross_attention(tiny_unet, scale=1.0)
    assert len(params) == 2 * len(attention_modules(tiny_unet, "cross")) == 8
    assert all(any(p is q for q in tiny_unet.parameters()) for p in params)  # registered in the UNet
    again = attach_decoupled_cross_attention(tiny_unet)
    assert len(again) == len(params) and all(a is b for a, b in zip(again, params, strict=True))
    run = lambda **kw: tiny_unet(x, t, encoder_hidden_states=text, cross_attention_kwargs=kw).sample  # noqa: E731
    with torch.no_grad(), caplog.at_level(logging.WARNING):
        assert torch.equal(run(), base)
        assert torch.equal(run(extra_tokens=torch.zeros(2, 3, 8)), base)
        tokens = torch.randn(2, 3, 8)
        assert not torch.allclose(run(extra_tokens=tokens), base)
        # masked-out tokens are ignored exactly; a fully masked row adds exactly nothing
        mask = torch.tensor([[True, False, True], [False, False, False]])
        edited = tokens.clone()
        edited[0, 1] += 5.0
        edited[1] += 5.0
        a, b = run(extra_tokens=tokens, extra_mask=mask), run(extra_tokens=edited, extra_mask=mask)
        assert torch.equal(a, b) and torch.isfinite(a).all()
        assert torch.equal(a[1], base[1])
    assert "are not expected" not in caplog.text  # self-attention processors accept the extra kwargs
    # EMA copies and pickling (spawned workers) keep working with the installed processors
    clone = copy.deepcopy(tiny_unet)
    restored = pickle.loads(pickle.dumps(tiny_unet))
    with torch.no_grad():
        for other in (clone, restored):
            torch.testing.assert_close(
                other(
                    x, t, encoder_hidden_states=text, cross_attention_kwargs={"extra_tokens": tokens}
                ).sample,
                run(extra_tokens=tokens),
                rtol=0,
                atol=0,
            )


def test_set_processors_factory_and_ignore_kwargs(tiny_unet):
    seen = []

    def factory(name, attn, old):
        seen.append(name)
        return old  # keep: nothing replaced

    assert set_processors(tiny_unet, factory, which="self", ignore_kwargs=("foo",)) == {}
    assert all(n.endswith("attn1.processor") for n in seen) and len(seen) == 4
    assert all(isinstance(p, IgnoreKwargs) for p in tiny_unet.attn_processors.values())
    x, text = torch.randn(1, 4, 8, 16), torch.randn(1, 5, 8)
    with torch.no_grad():
        a = tiny_unet(x, 3, encoder_hidden_states=text).sample
        b = tiny_unet(x, 3, encoder_hidden_states=text, cross_attention_kwargs={"foo": 1}).sample
    assert torch.equal(a, b)


def test_attaching_to_a_unet_without_cross_attention_raises():
    from diffusers import UNet2DModel

    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 8),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )
    with pytest.raises(ValueError, match="no cross-attention"):
        attach_decoupled_cross_attention(unet)
