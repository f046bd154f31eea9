"""CS-AV (spec §6): the formula, the pluggable embedder protocol, the tiny CAVP-style embedder and the CLI."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fourfold.metrics.csav import (
    AVEmbedder,
    TinyCAVP,
    TinyCAVPConfig,
    csav,
    csav_from_embeddings,
    even_frames,
    load_av_embedder,
)
from fourfold.nn.modeling import CheckpointError


class _Fixed:
    """A mock embedder returning given vectors (the protocol needs only the two methods)."""

    def __init__(self, audio, frames):
        self.audio, self.frames, self.seen = torch.tensor(audio), torch.tensor(frames), []

    def embed_audio(self, wav, sr):
        self.seen.append(("audio", tuple(wav.shape), sr))
        return self.audio[: len(wav)]

    def embed_frames(self, frames):
        self.seen.append(("frames", tuple(frames.shape)))
        return self.frames[: len(frames)]


def test_csav_formula_against_hand_values():
    audio = [[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]]
    # means over frames: [1, 1], [0, 2], [-3, -4]
    frames = [[[1.0, 0.0], [1.0, 2.0]], [[0.0, 1.0], [0.0, 3.0]], [[-3.0, -4.0], [-3.0, -4.0]]]
    per_clip = csav_from_embeddings(np.array(audio), np.array(frames))
    assert np.allclose(per_clip, [1 / math.sqrt(2), 1.0, -1.0])
    emb = _Fixed(audio, frames)
    assert isinstance(emb, AVEmbedder)
    wavs = [np.zeros(800, np.float32)] * 3
    videos = [np.zeros((10, 8, 8, 3), np.uint8)] * 3
    out = csav(emb, wavs, 16000, videos, n_frames=2)
    assert out["csav"] == pytest.approx((1 / math.sqrt(2) + 1 - 1) / 3) and out["csav_clips"] == 3
    assert ("frames", (3, 2, 8, 8, 3)) in emb.seen and ("audio", (3, 800), 16000) in emb.seen
    with pytest.raises(ValueError, match="paired"):
        csav(emb, wavs, 16000, videos[:2])
    with pytest.raises(TypeError, match="embed_audio"):
        csav(object(), wavs, 16000, videos)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        csav_from_embeddings(np.zeros((2, 3)), np.zeros((2, 4, 5)))


def test_even_frames_takes_span_centres():
    video = np.arange(10)[:, None, None, None].repeat(3, axis=-1).astype(np.uint8) * np.ones(
        (1, 2, 2, 3), np.uint8
    )
    assert even_frames(video, 5)[:, 0, 0, 0].tolist() == [1, 3, 5, 7, 9]
    assert even_frames(video, 20).shape == (20, 2, 2, 3)
    with pytest.raises(ValueError, match="frames, H, W, 3"):
        even_frames(np.zeros((4, 4)), 2)


def _tiny(n_frames=4):
    torch.manual_seed(0)
    return TinyCAVP(
        TinyCAVPConfig(dim=8, channels=(4, 8), n_frames=n_frames, image_size=16, n_positions=2)
    ).eval()


def test_tiny_cavp_save_load_and_shapes(tmp_path):
    model = _tiny()
    model.save_pretrained(tmp_path / "emb")
    loaded = load_av_embedder(tmp_path / "emb")
    assert isinstance(loaded, TinyCAVP) and isinstance(loaded, AVEmbedder)
    wav = torch.randn(2, 8000)
    frames = torch.randint(0, 255, (2, 4, 24, 24, 3), dtype=torch.uint8)
    with torch.no_grad():
        a, v = model.embed_audio(wav, 16000), model.embed_frames(frames)
        assert a.shape == (2, 8) and v.shape == (2, 4, 8)
        assert torch.equal(loaded.embed_audio(wav, 16000), a) and torch.equal(loaded.embed_frames(frames), v)
        # another sample rate is resampled to the embedder's 16 kHz first
        assert loaded.embed_audio(torch.randn(1, 11025), 22050).shape == (1, 8)
    with pytest.raises(ValueError, match="batch, frames, H, W, 3"):
        model.embed_frames(frames[0])


def test_contrastive_training_separates_clips():
    model = _tiny().train()
    # four distinguishable clips: tones of different pitch, each with its own frame colour
    t = torch.arange(8000) / 16000
    wav = torch.stack([torch.sin(2 * math.pi * f * t) for f in (200.0, 700.0, 1900.0, 4000.0)])
    colours = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=torch.uint8)
    frames = torch.zeros(4, 4, 16, 16, 3, dtype=torch.uint8)
    frames[:, :, 4:12, 4:12] = colours[:, None, None, None]
    mel = model.log_mel(wav, 16000)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first, _ = model.contrastive_loss(mel, frames)
    for _ in range(40):
        loss, _ = model.contrastive_loss(mel, frames)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last, info = model.contrastive_loss(mel, frames)
    assert float(last.detach()) < 0.5 * float(first.detach()) and info["retrieval_acc"] == 1.0


def test_load_av_embedder_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_av_embedder(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_av_embedder(tmp_path / "half")


def test_eval_cli_csav(tmp_path):
    from fourfold.drawaudio.cli import app

    runner = CliRunner()
    ref = tmp_path / "ref"
    r = runner.invoke(app, ["data", "--out", str(ref), "--procedural", "2", "--seed", "3"])
    assert r.exit_code == 0, r.output
    gen = tmp_path / "gen"
    gen.mkdir()
    for name in ("bounce_000003", "bounce_000004"):
        shutil.copy(ref / f"{name}.wav", gen / f"{name}.wav")
    _tiny(n_frames=8).save_pretrained(tmp_path / "emb")
    out = tmp_path / "m.json"
    args = ["eval", "--gen", str(gen), "--ref", str(ref), "--metrics", "csav", "--out", str(out)]
    r = runner.invoke(app, [*args, "--av-embedder", str(tmp_path / "emb")])
    assert r.exit_code == 0, r.output
    m = json.loads(out.read_text())
    assert m["csav_clips"] == 2 and -1.0 <= m["csav"] <= 1.0
    r = runner.invoke(app, args)
    assert r.exit_code != 0 and "--av-embedder" in r.output
    r = runner.invoke(app, [*args, "--av-embedder", str(tmp_path / "emb"), "--video", str(gen)])
    assert r.exit_code != 0 and "no video" in r.output
    r = runner.invoke(app, [*args, "--av-embedder", str(tmp_path / "missing")])
    assert r.exit_code != 0 and "not found" in str(r.exception) + r.output
