"""The DAC-style waveform VAE (SongCreator App A.3) and DAC's discriminator: shapes, strides, latent rate,
the mean/log-variance split and KL, save/load, discriminator outputs, and a few-step loss decrease."""

import math

import pytest
import torch

from fourfold.audio.gan import (
    DACDiscriminator,
    DACDiscriminatorConfig,
    MultiBandSTFTDiscriminator,
    discriminator_loss,
)
from fourfold.audio.waveform_vae import (
    Snake,
    WaveformVAE,
    WaveformVAEConfig,
    WaveformVAETraining,
    train_waveform_vae,
)
from fourfold.nn import CheckpointError


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return WaveformVAE(WaveformVAEConfig.tiny())


def test_paper_config_strides_rate_and_parameter_count():
    cfg = WaveformVAEConfig.paper()
    assert cfg.encoder_strides == (4, 4, 8, 8) and cfg.decoder_strides == (8, 8, 4, 4)
    assert cfg.hop_length == 1024 and cfg.frame_rate == pytest.approx(43.07, abs=0.01)
    with torch.device("meta"):
        model = WaveformVAE(cfg)
    # the encoder's last conv emits 64 channels: mean and log-variance of the 32-d latent
    assert model.encoder[-1].out_channels == 64 and model.decoder[0].in_channels == 32
    assert model.decoder[0].out_channels == 1536 and model.encoder[0].out_channels == 128
    # widths double per encoder block (128 -> 2048) and halve per decoder block (1536 -> 96)
    assert model.encoder[-3][-1].out_channels == 2048 and model.decoder[-3][1].out_channels == 96
    assert model.num_parameters() == pytest.approx(120.63e6, rel=0.001)


def test_tiny_shapes_and_latent_rate(vae):
    cfg = vae.config
    assert cfg.hop_length == 64 and cfg.latent_dim == 8 and cfg.frame_rate == 250.0  # spec §4 tiny
    for n in (64, 640, 1280 + 64):
        mean, logvar = vae.encode(torch.randn(2, n) * 0.1)
        assert mean.shape == logvar.shape == (2, 8, n // 64)
        assert vae.decode(mean).shape == (2, n)
    with pytest.raises(ValueError, match="multiple of 64"):
        vae.encode(torch.randn(1, 100))
    with pytest.raises(ValueError, match="decode expects"):
        vae.decode(torch.randn(1, 4, 10))


def test_encoder_is_causal_free_but_local(vae):
    """Convolutional: a change at the end of a long clip leaves the first latent frames unchanged."""
    x = torch.randn(1, 64 * 40) * 0.1
    y = x.clone()
    y[0, -64:] += 0.5
    with torch.no_grad():
        a, b = vae.encode(x)[0], vae.encode(y)[0]
    assert torch.allclose(a[..., :20], b[..., :20]) and not torch.allclose(a[..., -1], b[..., -1])


def test_mean_logvar_split_and_kl(vae):
    x = torch.randn(3, 640) * 0.1
    with torch.no_grad():
        h = vae.encoder(x[:, None])
        mean, logvar = vae.encode(x)
    assert torch.equal(mean, h[:, :8]) and torch.equal(logvar, h[:, 8:].clamp(-30, 20))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, torch.exp(0.5 * logvar)), torch.distributions.Normal(0.0, 1.0)
    )
    assert WaveformVAE.kl(mean, logvar) == pytest.approx(float(ref.sum(1).mean()), rel=1e-4)
    assert float(WaveformVAE.kl(torch.zeros(1, 8, 5), torch.zeros(1, 8, 5))) == 0.0
    g = torch.Generator().manual_seed(0)
    z = WaveformVAE.sample(torch.zeros(1, 8, 4000), torch.full((1, 8, 4000), math.log(4.0)), g)
    assert z.std().item() == pytest.approx(2.0, rel=0.05)


def test_snake_activation():
    s = Snake(3)
    with torch.no_grad():
        s.alpha.copy_(torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1))
    x = torch.linspace(-2, 2, 7).expand(1, 3, 7)
    alpha = s.alpha
    assert torch.allclose(s(x), x + torch.sin(alpha * x) ** 2 / alpha)
    s(x).sum().backward()
    assert s.alpha.grad is not None and s.alpha.grad.abs().sum() > 0


def test_save_load_round_trip(tmp_path, vae):
    vae.save_pretrained(tmp_path / "vae")
    back = WaveformVAE.from_pretrained(tmp_path / "vae")
    x = torch.randn(1, 640) * 0.1
    with torch.no_grad():
        assert torch.equal(vae.decode(vae.encode(x)[0]), back.decode(back.encode(x)[0]))
    assert back.config == vae.config
    with pytest.raises(CheckpointError):
        WaveformVAE.from_pretrained(tmp_path / "vae", latent_dim=16)  # shape mismatch is named


def test_config_validation():
    with pytest.raises(ValueError, match="same product"):
        WaveformVAEConfig(encoder_strides=(4, 4), decoder_strides=(4, 2))
    with pytest.raises(ValueError, match="even"):
        WaveformVAEConfig(encoder_strides=(3, 4), decoder_strides=(4, 3))
    with pytest.raises(ValueError, match="mel_windows"):
        WaveformVAEConfig.tiny().__class__(mel_windows=(64,), mel_bins=(16, 32))


def test_discriminator_output_shapes_and_gradients():
    torch.manual_seed(0)
    cfg = DACDiscriminatorConfig.tiny()
    d = DACDiscriminator(cfg)
    wav = torch.randn(2, 4096, requires_grad=True)
    scores, feats = d(wav)
    assert len(scores) == len(feats) == len(cfg.periods) + len(cfg.stft_windows)
    assert all(s.shape[0] == 2 and s.ndim == 2 for s in scores)
    # MPD: 4 strided convs + 1 + post; STFT: 5 convs per band + post
    assert [len(f) for f in feats] == [6] * len(cfg.periods) + [5 * len(cfg.bands) + 1] * len(
        cfg.stft_windows
    )
    stft = d.stft.resolutions[0]
    bins = cfg.stft_windows[0] // 2 + 1
    assert stft.bands[0][0] == 0 and stft.bands[-1][1] == bins
    # the band outputs are joined along frequency: 4 strided-by-2 convs per band
    frames = 4096 // (cfg.stft_windows[0] // 4) + 1
    widths = [math.ceil((hi - lo) / 8) for lo, hi in stft.bands]
    assert feats[len(cfg.periods)][-1].shape == (2, 1, frames, sum(widths))
    discriminator_loss(scores, [s.detach() * 0 for s in scores]).backward()
    assert wav.grad is not None and wav.grad.abs().sum() > 0
    with torch.device("meta"):
        assert DACDiscriminator(DACDiscriminatorConfig.paper()).num_parameters() > 1e6
    assert isinstance(d.stft, MultiBandSTFTDiscriminator)
    with pytest.raises(ValueError, match="bands"):
        DACDiscriminatorConfig(bands=((0.5, 0.2),))


def test_few_steps_decrease_the_reconstruction_loss():
    """Warm-up (mel L1 + KL) then the GAN objective on a tiny fixed batch of tones: the mel L1 falls."""
    torch.manual_seed(0)
    t = torch.arange(2560) / 16000
    wavs = torch.stack([0.5 * torch.sin(2 * math.pi * f * t) for f in (220.0, 330.0, 440.0, 660.0)])
    vae = WaveformVAE(WaveformVAEConfig.tiny())
    training = WaveformVAETraining(vae, DACDiscriminator(DACDiscriminatorConfig.tiny()))
    hist = train_waveform_vae(training, wavs, steps=45, warmup_steps=35, batch_size=4, learning_rate=2e-3)
    first = sum(h["mel_l1"] for h in hist[:3]) / 3
    last = sum(h["mel_l1"] for h in hist[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert "d_loss" not in hist[34] and "d_loss" in hist[35] and "g_fm" in hist[-1]
    assert all(math.isfinite(v) for h in hist for v in h.values())
    assert not training.training  # left in eval mode
