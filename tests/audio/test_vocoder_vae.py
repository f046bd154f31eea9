"""Vocoders and the mel VAE: shapes, loading paths (fourfold, Auffusion, SpeechT5), losses, learning."""

import copy
import json
import math
import os

import pytest
import torch

from fourfold.audio.gan import (
    HiFiGANDiscriminator,
    HiFiGANDiscriminatorConfig,
    HiFiGANTraining,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    hifigan_generator_loss,
)
from fourfold.audio.mel import MelConfig, mel_spectrogram, mel_to_image
from fourfold.audio.vae import MelVAE, MelVAEConfig
from fourfold.audio.vocoder import GriffinLim, HiFiGAN, HiFiGANConfig, load_vocoder
from fourfold.nn import CheckpointError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MEL = MelConfig.tiny()


@pytest.fixture
def generator():
    torch.manual_seed(0)
    return HiFiGAN(HiFiGANConfig.tiny())


def test_generator_shapes_and_config_checks(generator):
    assert generator(torch.randn(2, 64, 13)).shape == (2, 13 * 160)
    assert HiFiGAN(HiFiGANConfig.paper(80, 256)).num_parameters() == pytest.approx(
        13.92e6, rel=0.01
    )  # V1, Table 1
    # Auffusion's rule for odd k − u keeps the exact upsampling factor
    odd = HiFiGANConfig(8, 15, 16000, (5, 3), (10, 4), 16, "2", (3,), ((1, 3),))
    assert HiFiGAN(odd)(torch.randn(1, 8, 7)).shape == (1, 7 * 15)
    with pytest.raises(ValueError, match="hop_length"):
        HiFiGANConfig(hop_length=160)  # (8, 8, 2, 2) multiplies to 256
    with pytest.raises(ValueError, match="64"):
        generator(torch.randn(1, 80, 5))
    gl = GriffinLim(MEL, n_iter=2)
    assert gl(mel_spectrogram(torch.randn(1, 1600), MEL)).shape == (1, 1600)


def test_auffusion_and_fourfold_vocoder_directories(tmp_path, generator):
    mel = torch.randn(1, 64, 9)
    with torch.no_grad():
        want = generator(mel)
    c = generator.config
    auff = tmp_path / "auffusion_vocoder"
    auff.mkdir()
    (auff / "config.json").write_text(json.dumps({
        "resblock": c.resblock, "upsample_rates": list(c.upsample_rates), "upsample_kernel_sizes": list(c.upsample_kernel_sizes),
        "upsample_initial_channel": c.upsample_initial_channel, "resblock_kernel_sizes": list(c.resblock_kernel_sizes),
        "resblock_dilation_sizes": [list(d) for d in c.resblock_dilation_sizes], "num_mels": 64, "hop_size": 160,
        "sampling_rate": 16000, "learning_rate": 2e-4, "segment_size": 8192,
    }))  # fmt: skip
    state = generator.auffusion_state()
    assert any(k.endswith("weight_g") for k in state) and not any("parametrizations" in k for k in state)
    with pytest.raises(CheckpointError, match=r"vocoder\.pt"):
        load_vocoder(auff, MEL)
    torch.save({"generator": state}, auff / "vocoder.pt")
    with torch.no_grad():
        torch.testing.assert_close(load_vocoder(auff, MEL)(mel), want)
    with pytest.raises(CheckpointError, match="mel bands"):
        load_vocoder(auff, MelConfig.auffusion())
    torch.save({"generator": {k: v for k, v in state.items() if "conv_post" not in k}}, auff / "vocoder.pt")
    with pytest.raises(CheckpointError, match="missing keys"):
        HiFiGAN.from_auffusion(auff)

    generator.save_pretrained(tmp_path / "ours")
    with torch.no_grad():
        torch.testing.assert_close(load_vocoder(tmp_path / "ours", MEL)(mel), want)
    assert isinstance(load_vocoder(None, MEL), GriffinLim)


def test_speecht5_hifigan_directory(tmp_path):
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    torch.manual_seed(0)
    cfg = SpeechT5HifiGanConfig(
        model_in_dim=64, upsample_initial_channel=16, upsample_rates=[4, 4, 10], upsample_kernel_sizes=[8, 8, 20],
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
    )  # fmt: skip
    SpeechT5HifiGan(cfg).save_pretrained(tmp_path / "vocoder")
    voc = load_vocoder(tmp_path / "vocoder", MEL)
    with torch.no_grad():
        assert voc(torch.randn(2, 64, 10)).shape == (2, 1600)
    with pytest.raises(CheckpointError, match="64 mel bands"):
        load_vocoder(tmp_path / "vocoder", MelConfig.auffusion())


def test_gan_losses_formulas():
    ones, zeros = [torch.ones(2, 5), torch.ones(2, 3)], [torch.zeros(2, 5), torch.zeros(2, 3)]
    assert discriminator_loss(ones, zeros).item() == 0.0  # perfect discriminator
    assert discriminator_loss(zeros, ones).item() == 4.0  # 2 sub-discriminators × (1 + 1)
    assert generator_adversarial_loss(ones).item() == 0.0 and generator_adversarial_loss(zeros).item() == 2.0
    feats = [[torch.ones(1, 4), torch.zeros(1, 2)]]
    assert feature_matching_loss(feats, [[torch.zeros(1, 4), torch.zeros(1, 2)]]).item() == 1.0


def test_hifigan_trains_on_one_clip(generator):
    """Mel-L1 + adversarial training: the generator's mel error falls, the discriminator learns."""
    torch.manual_seed(0)
    t = torch.arange(1600) / 16000
    real = (0.5 * torch.sin(2 * math.pi * 440 * t) * torch.linspace(1, 0.2, 1600))[None]
    mel = mel_spectrogram(real, MEL.replace(peak_norm=None))
    disc = HiFiGANDiscriminator(HiFiGANDiscriminatorConfig.tiny())
    opt_g = torch.optim.AdamW(generator.parameters(), 2e-3, betas=(0.8, 0.99))
    opt_d = torch.optim.AdamW(disc.parameters(), 2e-4, betas=(0.8, 0.99))
    first = last = None
    for _ in range(20):
        fake = generator(mel)
        d_loss = discriminator_loss(*[disc(x)[0] for x in (real, fake.detach())])
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss, info = hifigan_generator_loss(disc, real, fake, MEL)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        first = first if first is not None else info["mel_l1"]
        last = info["mel_l1"]
    assert math.isfinite(last) and last < 0.5 * first  # measured: 4.4 -> 0.9


def test_hifigan_training_module_through_the_trainer(tmp_path, generator):
    """One optimizer, simultaneous G/D update: each half of the loss moves only its own network."""
    from fourfold.train import Trainer, TrainerConfig

    torch.manual_seed(0)
    disc = HiFiGANDiscriminator(HiFiGANDiscriminatorConfig.tiny())
    gan = HiFiGANTraining(generator, disc, MEL)
    disc_before = copy.deepcopy(disc)  # spectral norm's power iteration changes buffers on every call
    wav = torch.randn(2, 1600) * 0.3
    loss, logs = gan(wav)
    loss.backward()
    assert all(p.grad is not None for p in gan.parameters())
    # the discriminator's gradient equals that of its own loss alone (the generator terms see a detached copy)
    from fourfold.audio.mel import normalize_waveform

    real = normalize_waveform(wav, MEL)
    fake = generator(mel_spectrogram(real, MEL)).detach()
    discriminator_loss(disc_before(real)[0], disc_before(fake)[0]).backward()
    for (k, p), q in zip(disc.named_parameters(), disc_before.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=k)
    with pytest.raises(ValueError, match="multiple of 160"):
        gan(torch.randn(1, 1000))

    t = torch.arange(1600) / 16000
    clips = [0.5 * torch.sin(2 * math.pi * f * t) for f in (300.0, 520.0, 700.0, 880.0)]
    cfg = TrainerConfig(output_dir=str(tmp_path / "run"), max_steps=20, batch_size=2, learning_rate=2e-3,
                        progress=False, log_every=1, seed=0)  # fmt: skip
    result = Trainer(gan, cfg, clips, loss_fn=lambda model, batch: model(batch)).fit()
    assert len(result.losses) == 20 and all(math.isfinite(x) for x in result.losses)
    with torch.no_grad():
        _, after = gan(torch.stack(clips))
    assert after["mel_l1"] < 0.6 * logs["mel_l1"]


def test_mel_vae_shapes_round_trips_and_learning(tmp_path):
    torch.manual_seed(0)
    vae = MelVAE(MelVAEConfig.tiny())
    mel = mel_spectrogram(torch.randn(2, 64 * 160) * 0.2, MEL)  # (2, 64, 64)
    z = vae.encode_mel(mel, MEL)
    assert z.shape == (2, 4, 16, 16)
    assert vae.decode_mel(z, MEL).shape == mel.shape
    with pytest.raises(ValueError, match="multiples of 4"):
        vae.encode(torch.zeros(1, 3, 62, 64))
    with pytest.raises(ValueError, match=r"\(batch, 3"):
        vae.encode(torch.zeros(1, 1, 64, 64))
    vae.save_pretrained(tmp_path / "ours")
    torch.testing.assert_close(MelVAE.from_pretrained(tmp_path / "ours").encode_mel(mel, MEL), z)
    vae.vae.save_pretrained(tmp_path / "diffusers_vae")
    torch.testing.assert_close(MelVAE.from_diffusers(tmp_path / "diffusers_vae").encode_mel(mel, MEL), z)
    with pytest.raises(CheckpointError, match=r"config\.json"):
        MelVAE.from_diffusers(tmp_path / "nowhere")

    image = mel_to_image(mel, MEL)
    opt = torch.optim.Adam(vae.parameters(), 2e-3)
    losses = []
    for _ in range(12):
        loss, info = vae(image, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(info["l1"])
    assert losses[-1] < 0.7 * losses[0]
    one = MelVAE(MelVAEConfig.tiny(in_channels=1))
    assert one.encode_mel(mel, MEL).shape == (2, 4, 16, 16)
