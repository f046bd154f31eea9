"""LatentDiffusionRenderer on the paper's waveform-VAE latent (App A.3): a 1-D latent at the VAE's frame
rate, decoded straight to audio; conditioning, seeding, save/load, training and the paper preset."""

import pytest
import torch

from fourfold.audio.waveform_vae import WaveformVAE
from fourfold.songcreator.ldm_renderer import (
    LatentDiffusionRenderer,
    LatentDiffusionRendererConfig,
    train_ldm_renderer,
)


@pytest.fixture
def renderer():
    torch.manual_seed(0)
    r = LatentDiffusionRenderer(LatentDiffusionRendererConfig.tiny(vae="waveform"))
    torch.nn.init.normal_(r.embed.weight, std=3.0)  # a random renderer: make the conditioning visible
    return r


def test_waveform_latent_shapes_and_rate(renderer):
    cfg = renderer.config
    assert isinstance(renderer.vae, WaveformVAE) and renderer.waveform
    # 25 Hz tokens, 640 samples each; the tiny VAE has hop 64: 10 latent frames (250 Hz) per token
    assert cfg.samples_per_token == 640 and renderer.latent_shape(13) == (8, 130)
    toks = torch.randint(0, 325, (2, 13))
    z = renderer.generate_latent(toks, "vocals")
    assert z.shape == (2, 8, 130)
    wav = renderer.render(toks, "vocals")
    assert wav.shape == (2, 13 * 640) and wav.abs().max() <= 1.0
    # render is the VAE decoder applied to the sampled latent: no Griffin-Lim in between
    assert torch.equal(wav, renderer.vae.decode(z)[..., : 13 * 640])
    assert renderer.generate_mel(toks, "vocals").shape == (2, 64, 52)


def test_conditioning_seeding_and_round_trip(tmp_path, renderer):
    toks = torch.randint(0, 325, (1, 13))
    a = renderer.generate_latent(toks, "vocals", seed=0)
    assert torch.equal(a, renderer.generate_latent(toks, "vocals", seed=0))
    other = toks.clone()
    other[0, 5] = (other[0, 5] + 1) % 325
    assert not torch.equal(a, renderer.generate_latent(other, "vocals", seed=0))
    assert not torch.equal(a, renderer.generate_latent(toks, "song", seed=0))
    renderer.save_pretrained(tmp_path / "r")
    back = LatentDiffusionRenderer.from_pretrained(tmp_path / "r")
    assert back.config.waveform_vae == renderer.config.waveform_vae
    assert torch.equal(back.render(toks, "vocals"), renderer.render(toks, "vocals"))


def test_training_runs_on_waveform_latents(renderer):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    examples = [
        (torch.randint(0, 325, (40,), generator=g), 0.1 * torch.randn(40 * 640, generator=g), kind)
        for kind in ("vocals", "accompaniment", "song")
    ]
    vae_before = {k: v.clone() for k, v in renderer.vae.state_dict().items()}
    losses = train_ldm_renderer(renderer, examples, vae_steps=0, unet_steps=3, batch_size=2, crop_frames=8)
    assert len(losses["unet"]) == 3 and all(torch.isfinite(torch.tensor(losses["unet"])))
    # vae_steps=0 leaves the (separately GAN-trained) VAE untouched; the latent scale is fitted
    assert all(torch.equal(v, renderer.vae.state_dict()[k]) for k, v in vae_before.items())
    assert float(renderer.latent_scale) != 1.0
    # cached clip latents cropped at token boundaries match encoding the crop away from the edges
    _, w, _ = examples[0]
    whole = renderer.encode_unscaled(w[None], 40)
    crop = renderer.encode_unscaled(w[None, 10 * 640 : 18 * 640], 8)
    assert torch.allclose(whole[..., 100 + 20 : 180 - 20], crop[..., 20:-20], atol=1e-4)


def test_paper_preset_is_the_waveform_vae():
    cfg = LatentDiffusionRendererConfig.paper()
    assert cfg.sample_rate == 44100 and cfg.waveform_vae.hop_length == 1024
    assert cfg.waveform_vae.latent_dim == 32 and cfg.inference_steps == 100
    with torch.device("meta"):
        model = LatentDiffusionRenderer(cfg)
    assert model.latent_shape(50) == (32, 44)  # 1 s of 50 Hz tokens -> ceil(44100 / 1024) frames
    assert LatentDiffusionRendererConfig.paper(vae="mel").waveform_vae is None
    with pytest.raises(ValueError, match="sample_rate"):
        LatentDiffusionRendererConfig(
            waveform_vae=LatentDiffusionRendererConfig.tiny(vae="waveform").waveform_vae
        )
