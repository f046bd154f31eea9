"""FAD (VGGish architecture), SECS (speaker encoder) and PER (CTC phoneme recogniser), tiny random models."""

import numpy as np
import pytest
import torch

from fourfold.metrics.song_models import (
    PhonemeRecognizer,
    SpeakerEncoder,
    SpeakerEncoderConfig,
    VGGish,
    VGGishConfig,
    fad_vggish,
    phoneme_error_rate,
    secs,
    vggish_log_mel,
)
from fourfold.nn.modeling import CheckpointError

SR = 16000


def tone(f, seconds=2.0, sr=SR, seed=0):
    t = np.arange(int(seconds * sr)) / sr
    noise = np.random.default_rng(seed).normal(0, 0.01, len(t))
    return (0.5 * np.sin(2 * np.pi * f * t) + noise).astype(np.float32)


def test_vggish_front_end():
    ex = vggish_log_mel(tone(1000.0), SR)
    assert ex.shape == (2, 96, 64)
    # a 1 kHz tone peaks in the HTK-mel band holding 1 kHz (125–7500 Hz over 64 bands)
    mel = lambda f: 1127 * np.log(1 + f / 700)  # noqa: E731
    centers = np.linspace(mel(125), mel(7500), 66)[1:-1]
    assert abs(int(ex.mean((0, 1)).argmax()) - int(np.abs(centers - mel(1000)).argmin())) <= 1
    # resampled input gives the same layout
    assert vggish_log_mel(tone(1000.0, sr=24000), 24000).shape == (2, 96, 64)
    with pytest.raises(ValueError, match=r"0\.96"):
        vggish_log_mel(tone(1000.0, seconds=0.5), SR)


def test_vggish_fad_and_loading(tmp_path):
    torch.manual_seed(0)
    model = VGGish(VGGishConfig.tiny())
    model.save_pretrained(tmp_path / "vggish")
    back = VGGish.from_pretrained(tmp_path / "vggish")
    e = back.embed(tone(440.0), SR)
    assert e.shape == (2, 128) and np.allclose(e, model.embed(tone(440.0), SR))
    # torchvggish-style state file
    torch.save(model.state_dict(), tmp_path / "vggish.pth")
    assert np.allclose(
        VGGish.from_torch_state(tmp_path / "vggish.pth", VGGishConfig.tiny()).embed(tone(440.0), SR), e
    )
    with pytest.raises(CheckpointError, match="shape"):
        VGGish.from_torch_state(
            tmp_path / "vggish.pth",
            VGGishConfig.tiny().__class__(hidden=16, conv_channels=(4, 8, 8, 8, 16, 16)),
        )
    a = [tone(440.0 * (1 + 0.01 * i), seed=i) for i in range(6)]
    a2 = [tone(440.0 * (1 + 0.01 * i), seed=10 + i) for i in range(6)]
    b = [np.random.default_rng(i).normal(0, 0.3, 2 * SR).astype(np.float32) for i in range(6)]
    same, diff = fad_vggish(a, a2, SR, model), fad_vggish(a, b, SR, model)
    assert 0 <= same < diff


def test_secs(tmp_path):
    torch.manual_seed(0)
    enc = SpeakerEncoder(SpeakerEncoderConfig.tiny())
    x = tone(220.0, seconds=3.0)
    e = enc.embed_utterance(x, SR)
    assert e.shape == (16,) and abs(np.linalg.norm(e) - 1) < 1e-5
    assert secs(x, x, SR, enc) == pytest.approx(1.0, abs=1e-5)
    assert secs(x, np.random.default_rng(0).normal(0, 0.3, 3 * SR).astype(np.float32), SR, enc) < 0.9999
    # Resemblyzer's file wraps the state dict in {"model_state": ...} and adds similarity parameters
    state = {**enc.state_dict(), "similarity_weight": torch.ones(1), "similarity_bias": torch.zeros(1)}
    torch.save({"model_state": state, "step": 1}, tmp_path / "pretrained.pt")
    back = SpeakerEncoder.from_torch_state(tmp_path / "pretrained.pt", SpeakerEncoderConfig.tiny())
    assert np.allclose(back.embed_utterance(x, SR), e, atol=1e-6)
    with pytest.raises(CheckpointError, match="missing weights file"):
        SpeakerEncoder.from_torch_state(tmp_path / "nope.pt")


PHONES = ["<pad>", "|", "AA", "IY", "M", "S", "UW"]


class _FakeCTC:
    """Returns fixed logits: frames decode to [pad, M, M, pad, UW, UW, |, S, IY, IY]."""

    def eval(self):
        return self

    def __call__(self, x):
        ids = [0, 4, 4, 0, 6, 6, 1, 5, 3, 3]
        logits = torch.full((1, len(ids), len(PHONES)), -5.0)
        logits[0, torch.arange(len(ids)), torch.tensor(ids)] = 5.0
        return type("Out", (), {"logits": logits})()


def _tokenizer(tmp_path):
    import json

    from transformers import Wav2Vec2CTCTokenizer

    (tmp_path / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(PHONES)}))
    return Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), pad_token="<pad>", word_delimiter_token="|")


def test_per_greedy_ctc(tmp_path):
    rec = PhonemeRecognizer(_FakeCTC(), _tokenizer(tmp_path))
    hyp = rec.transcribe(np.zeros(SR, np.float32), SR)
    assert hyp == ["M", "UW", "S", "IY"]
    assert phoneme_error_rate([["M", "UW", "S", "IY"]], [hyp]) == 0.0
    assert phoneme_error_rate([["M", "UW", "S", "IY"], ["AA"]], [hyp, []]) == pytest.approx(1 / 5)


def _save_tiny_ctc(tmp_path, out) -> None:
    """A seeded random 1-layer Wav2Vec2ForCTC over PHONES, with its tokenizer, saved to ``out``."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    tok = _tokenizer(tmp_path)
    cfg = Wav2Vec2Config(
        vocab_size=len(PHONES),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    Wav2Vec2ForCTC(cfg).save_pretrained(out)
    tok.save_pretrained(out)


def test_per_local_wav2vec2(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _save_tiny_ctc(tmp_path, tmp_path / "ctc")
    rec = PhonemeRecognizer.from_pretrained(tmp_path / "ctc")
    hyp = rec.transcribe(tone(300.0, seconds=0.5), SR)
    assert all(p in PHONES[2:] for p in hyp)
    with pytest.raises(CheckpointError, match=r"config\.json"):
        PhonemeRecognizer.from_pretrained(tmp_path)


def test_cli_eval_audio_metrics(tmp_path, monkeypatch):
    """`eval --metrics fad,mcd,secs,per` on the shipped pipeline with tiny local models."""
    import json

    from typer.testing import CliRunner

    from fourfold.songcreator.cli import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    VGGish(VGGishConfig.tiny()).save_pretrained(tmp_path / "vggish")
    SpeakerEncoder(SpeakerEncoderConfig.tiny()).save_pretrained(tmp_path / "spk")
    _save_tiny_ctc(tmp_path, tmp_path / "ctc")
    args = [
        "eval",
        "--metrics",
        "fad,mcd,secs,per",
        "--n",
        "2",
        "--seconds",
        "1.2",
        "--out",
        str(tmp_path / "m.json"),
    ]
    r = CliRunner().invoke(
        app,
        [
            *args,
            "--vggish",
            str(tmp_path / "vggish"),
            "--speaker-encoder",
            str(tmp_path / "spk"),
            "--phoneme-model",
            str(tmp_path / "ctc"),
        ],
    )
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["fad"]["embedder"] == "vggish" and m["fad"]["value"] >= 0
    assert m["mcd"]["variant"] == "mcd_mel" and m["mcd"]["value"] > 0
    assert -1 <= m["secs"]["value"] <= 1 and m["per"]["value"] >= 0
    r = CliRunner().invoke(app, ["eval", "--metrics", "per"])
    assert r.exit_code != 0 and "--phoneme-model" in r.output
