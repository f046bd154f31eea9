"""PANNs CNN14 and VGGish: front ends against references, official key names, loading and its errors."""

import numpy as np
import pytest
import torch

from fourfold.audio.embedders import (
    Cnn14Config,
    PANNsCnn14,
    VGGish,
    VGGishConfig,
    load_embedder,
    save_embedder,
    vggish_log_mel,
)
from fourfold.metrics.audio import inception_score, kl_divergence
from fourfold.nn.modeling import CheckpointError

TINY_CNN14 = Cnn14Config(widths=(4, 4, 8, 8, 8, 16), classes=5)
TINY_VGGISH = VGGishConfig(widths=(4, 4, 8, 8), hidden=16, dim=6)


def _tone(freq, seconds=1.2, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_cnn14_log_mel_matches_librosa():
    import librosa

    wav = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    net = PANNsCnn14(TINY_CNN14)
    ours = net.log_mel(torch.from_numpy(wav)[None])[0, 0].numpy()  # (frames, mels)
    ref = librosa.feature.melspectrogram(
        y=wav, sr=16000, n_fft=512, hop_length=160, win_length=512, window="hann", center=True,
        pad_mode="reflect", power=2.0, n_mels=64, fmin=50, fmax=8000,
    )  # fmt: skip
    ref = 10 * np.log10(np.maximum(ref, 1e-10)).T
    assert ours.shape == ref.shape == (8000 // 160 + 1, 64)
    assert np.abs(ours - ref).max() < 1e-3


def test_cnn14_official_keys_outputs_and_round_trip(tmp_path):
    torch.manual_seed(0)
    net = PANNsCnn14(TINY_CNN14).eval()
    keys = set(net.state_dict())
    for k in ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
              "logmel_extractor.melW", "bn0.running_var", "conv_block6.bn2.weight", "fc1.bias",
              "fc_audioset.weight"):  # fmt: skip
        assert k in keys, k
    wav = torch.randn(2, 16000) * 0.1
    out = net(wav)
    assert out["2048"].shape == (2, 16) and out["logits"].shape == (2, 5)
    assert (out["2048"] >= 0).all()  # ReLU(fc1)
    # a PANNs-style .pth ({"model": state}, no num_batches_tracked as in old checkpoints) loads by key inference
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"model": state, "iteration": 7}, tmp_path / "cnn14.pth")
    loaded = load_embedder(tmp_path / "cnn14.pth")
    assert isinstance(loaded, PANNsCnn14) and not loaded.training
    torch.testing.assert_close(loaded(wav)["logits"], out["logits"])
    save_embedder(net, tmp_path / "saved")
    torch.testing.assert_close(load_embedder(tmp_path / "saved")(wav)["2048"], out["2048"])


def test_vggish_examples_and_mel():
    c = VGGishConfig()
    ex = vggish_log_mel(_tone(1000.0, seconds=2.0), c)
    # 1 + (32000 - 400) // 160 = 198 frames -> 2 whole 96-frame examples
    assert ex.shape == (2, 1, 96, 64)
    band = ex[0, 0].mean(0).argmax().item()
    from fourfold.audio.embedders import _hz_to_mel_htk

    edges = np.linspace(_hz_to_mel_htk(np.array(125.0)), _hz_to_mel_htk(np.array(7500.0)), 66)
    assert edges[band] <= _hz_to_mel_htk(np.array(1000.0)) <= edges[band + 2]  # the tone's own band
    silent = vggish_log_mel(np.zeros(16000, np.float32), c)
    assert torch.allclose(silent, torch.full_like(silent, float(np.log(0.01))))  # log(0 + 0.01)
    with pytest.raises(ValueError, match="96 frames"):
        vggish_log_mel(np.zeros(8000, np.float32), c)


def test_vggish_official_keys_flatten_order_and_loading(tmp_path):
    torch.manual_seed(0)
    net = VGGish(TINY_VGGISH).eval()
    convs = sorted(
        int(k.split(".")[1]) for k in net.state_dict() if k.startswith("features.") and k.endswith("weight")
    )
    assert convs == [0, 3, 6, 8, 11, 13]  # torchvggish make_layers indices
    assert {k.split(".")[1] for k in net.state_dict() if k.startswith("embeddings.")} == {"0", "2", "4"}
    ex = torch.randn(3, 1, 96, 64)
    feats = net.features(ex)  # (3, C, 6, 4)
    want = net.embeddings(feats.permute(0, 2, 3, 1).reshape(3, -1))  # TF channels-last flatten
    torch.testing.assert_close(net.embed_examples(ex), want)
    out = net(torch.from_numpy(_tone(440.0, 2.0))[None])
    assert out.shape == (1, 2, 6)
    assert (out < 0).any()  # no final ReLU (FAD's convention)
    torch.save(net.state_dict(), tmp_path / "vggish.pt")
    torch.testing.assert_close(
        load_embedder(tmp_path / "vggish.pt").embed_examples(ex), net.embed_examples(ex)
    )


def test_embedder_loading_errors(tmp_path):
    net = PANNsCnn14(TINY_CNN14)
    state = net.state_dict()
    broken = {k: v for k, v in state.items() if k != "fc1.weight"}
    torch.save(broken, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"fc1\.weight"):
        load_embedder(tmp_path / "missing.pt", kind="cnn14", config=TINY_CNN14)
    bad = dict(state, **{"fc1.bias": torch.zeros(3)})
    torch.save(bad, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"fc1.bias.*\(3,\)"):
        load_embedder(tmp_path / "shape.pt", config=TINY_CNN14)
    torch.save({"w": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="cannot tell"):
        load_embedder(tmp_path / "other.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"junk\.pth"):
        load_embedder(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="missing"):
        load_embedder(tmp_path / "nope.safetensors")


def test_is_and_kl_hand_computed():
    # two samples, one per class with p = (0.8, 0.2) and (0.2, 0.8), one split:
    # p̄ = (0.5, 0.5); IS = exp(0.8 ln 1.6 + 0.2 ln 0.4) for both rows
    logits = np.log(np.array([[0.8, 0.2], [0.2, 0.8]]))
    mean, std = inception_score(logits, splits=1, shuffle=False)
    assert mean == pytest.approx(np.exp(0.8 * np.log(1.6) + 0.2 * np.log(0.4)), rel=1e-12) and std == 0
    # KL(ref ‖ gen) for one pair: ref (0.5, 0.5), gen (0.8, 0.2)
    kl = kl_divergence(np.log([[0.8, 0.2]]), np.log([[0.5, 0.5]]))["kl_softmax"]
    assert kl == pytest.approx(0.5 * np.log(0.5 / (0.8 + 1e-6)) + 0.5 * np.log(0.5 / (0.2 + 1e-6)), rel=1e-9)


def test_distribution_metrics_needs_its_embedders():
    from fourfold.metrics.audio import distribution_metrics

    wavs = [np.zeros(16000, np.float32)] * 2
    with pytest.raises(ValueError, match="PANNs"):
        distribution_metrics(wavs, wavs, 16000, ["fd"])
    with pytest.raises(ValueError, match="VGGish"):
        distribution_metrics(wavs, wavs, 16000, ["fad"])
    with pytest.raises(ValueError, match="unknown"):
        distribution_metrics(wavs, wavs, 16000, ["csav"])
    with pytest.raises(ValueError, match="paired"):
        distribution_metrics(wavs, wavs[:1], 16000, ["fd"], panns=lambda w: w)
    torch.manual_seed(0)
    gen, ref = [*wavs, np.full(16000, 0.1, np.float32)], [*wavs, np.zeros(16000, np.float32)]
    out = distribution_metrics(gen, ref, 16000, ["fad"], vggish=VGGish(TINY_VGGISH).eval())
    assert np.isfinite(out["fad"]) and set(out) == {"fad"}
