"""Properties of the Draw an Audio model: loading, adapter-off equivalence, MAM masks, TLM, freezing."""

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

from fourfold.drawaudio.model import ADAPTER_WEIGHTS, DrawAudioModel
from fourfold.nn.modeling import CheckpointError, load_safetensors_checked


def _inputs(model, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    x = torch.randn(b, *cfg.latent_shape, generator=g)
    t = torch.tensor([500, 20])[:b]
    text = model.base.encode_text(["a red ball bounces", "a blue square bounces"][:b])
    f = cfg.num_video_frames
    frames = torch.rand(b, f, 3, cfg.video.image_size, cfg.video.image_size, generator=g)
    times = torch.arange(f) / cfg.video.fps
    return x, t, text, frames, times


def _plain_unet(base_dir):
    unet = UNet2DConditionModel.from_pretrained(str(base_dir / "unet")).eval()
    unet.set_attn_processor(AttnProcessor2_0())
    return unet


@torch.no_grad()
def test_zero_video_tokens_give_the_base_model(make_model, base_dir):
    model = make_model(base_dir)
    x, t, text, frames, times = _inputs(model)
    torch.nn.init.normal_(model.time_position)  # a trained time-position map must not leak into "no video"
    ref = _plain_unet(base_dir)(x, t, encoder_hidden_states=text).sample
    zero = model(x, t, text, video_tokens=torch.zeros(2, 2 * len(times), 32))
    assert torch.equal(zero, ref)
    tokens, _ = model.encode_video(frames, None, times)
    assert not torch.allclose(model(x, t, text, video_tokens=tokens), ref, atol=1e-4)


@torch.no_grad()
def test_tokens_mode_ignores_masked_out_pixels_bit_for_bit(make_model, base_dir):
    model = make_model(base_dir, mam={"mode": "tokens"})
    x, t, text, frames, times = _inputs(model)
    masks = torch.zeros(2, len(times), 64, 64)
    masks[:, :, :, :32] = 1  # keep the left half (patch-aligned)
    out = model(x, t, text, *model.encode_video(frames, masks, times))
    edited = frames.clone()
    edited[..., :, 32:] = torch.rand_like(edited[..., :, 32:])  # change only outside the mask
    assert torch.equal(model(x, t, text, *model.encode_video(edited, masks, times)), out)
    inside = frames.clone()
    inside[..., :, :32] = 1 - inside[..., :, :32]
    assert not torch.allclose(model(x, t, text, *model.encode_video(inside, masks, times)), out, atol=1e-5)
    # a fully masked clip: every key removed, output finite and equal to the no-video model
    tokens, keep = model.encode_video(frames, torch.zeros_like(masks), times)
    assert not keep.any()
    dead = model(x, t, text, tokens, keep)
    assert torch.isfinite(dead).all()
    assert torch.equal(dead, model(x, t, text, torch.zeros_like(tokens)))


def test_pixels_mode_masked_stream_has_no_gradient_outside(make_model, base_dir):
    model = make_model(base_dir, mam={"mode": "pixels"})
    _, _, _, frames, times = _inputs(model, b=1)
    frames.requires_grad_(True)
    masks = torch.zeros(1, len(times), 64, 64)
    masks[:, :, 10:30, 5:25] = 1
    tokens, keep = model.encode_video(frames, masks, times)
    assert keep is None and tokens.shape == (1, 2 * len(times), 32)
    f = len(times)
    (grad,) = torch.autograd.grad(tokens[:, f:].square().sum(), frames)  # the masked stream only
    assert grad[..., masks[0, 0] == 0].abs().max() == 0
    assert grad[..., masks[0, 0] == 1].abs().max() > 0
    (grad_full,) = torch.autograd.grad(model.encode_video(frames, masks, times)[0][:, :f].sum(), frames)
    assert grad_full[..., masks[0, 0] == 0].abs().max() > 0  # the full stream still sees the whole frame


@torch.no_grad()
@pytest.mark.parametrize("inject", ["conv_in", "latent"])
def test_tlm_changes_output_only_with_the_curve(make_model, base_dir, inject):
    model = make_model(base_dir, tlm={"inject": inject})
    x, t, text, frames, times = _inputs(model)
    tokens, _ = model.encode_video(frames, None, times)
    curve = torch.rand(2, model.cfg.loudness_frames)
    base_out = model(x, t, text, tokens)
    assert torch.equal(model(x, t, text, tokens, loudness=curve), base_out)  # zero-init: no effect yet
    torch.nn.init.normal_(model.tlm.net[-1].weight, std=0.1)
    with_curve = model(x, t, text, tokens, loudness=curve)
    assert not torch.allclose(with_curve, base_out, atol=1e-5)
    assert torch.equal(
        model(x, t, text, tokens, loudness=curve.clone()), with_curve
    )  # same curve, same output
    assert not torch.allclose(
        model(x, t, text, tokens, loudness=curve.roll(7, dims=1)), with_curve, atol=1e-5
    )
    dropped = model(x, t, text, tokens, loudness=curve, loudness_keep=torch.zeros(2))
    assert torch.equal(dropped, base_out)  # loudness dropout = no curve


def test_training_freezes_base_and_checkpoint_holds_only_adapter(make_model, base_dir, tmp_path):
    model = make_model(base_dir).train()
    base_before = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if ".processor." not in k and k.startswith(("unet.", "vae.", "text."))
    }
    adapter_before = {k: v.clone() for k, v in model.adapter_state_dict().items()}
    x, _, text, frames, times = _inputs(model)
    batch = {"latents": x, "text": text, "frames": frames, "masks": None, "times": times,
             "loudness": torch.rand(2, model.cfg.loudness_frames)}  # fmt: skip
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        loss, _ = model.loss(batch, generator=g)
        loss.backward()
        assert all(p.grad is None for n, p in model.named_parameters() if n in base_before)
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base_before.items())
    changed = [k for k, v in model.adapter_state_dict().items() if not torch.equal(v, adapter_before[k])]
    assert any(".processor.to_k_extra" in k for k in changed) and any(k.startswith("tlm.") for k in changed)
    assert "time_position" in changed
    assert any(k.startswith("video_tokenizer.") for k in changed) and any(
        k.startswith("frame_encoder.") for k in changed
    )
    model.save_adapter(tmp_path / "adapter")
    saved = load_safetensors_checked(tmp_path / "adapter" / ADAPTER_WEIGHTS)
    assert set(saved) == set(model.adapter_state_dict()) and not any(
        k.startswith(("vae.", "text.")) for k in saved
    )
    assert all(".processor." in k for k in saved if k.startswith("unet."))
    loaded = DrawAudioModel.from_pretrained(tmp_path / "adapter", base_dir).eval()
    model.eval()
    with torch.no_grad():
        args = (x, torch.tensor([3, 900]), text, *model.encode_video(frames, None, times))
        assert torch.equal(
            loaded(*args, loudness=batch["loudness"]), model(*args, loudness=batch["loudness"])
        )


def test_bad_checkpoints_name_the_problem(make_model, base_dir, tmp_path):
    model = make_model(base_dir)
    model.save_adapter(tmp_path / "a")
    path = tmp_path / "a" / ADAPTER_WEIGHTS
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"adapter\.safetensors"):
        model.load_adapter(tmp_path / "a")
    with pytest.raises(CheckpointError, match=r"drawaudio_config\.json"):
        DrawAudioModel.from_pretrained(tmp_path / "nothing", base_dir)


def test_audio_round_trip_shapes(make_model, base_dir):
    model = make_model(base_dir)
    wav = torch.from_numpy(
        np.random.default_rng(0).standard_normal((1, model.cfg.num_samples)).astype(np.float32)
    )
    z = model.base.encode_audio(wav * 0.1)
    assert z.shape == (1, *model.cfg.latent_shape)
    mel = model.base.decode_latents(z)
    assert mel.shape == (1, model.cfg.mel.n_mels, model.cfg.mel_frames)
