"""Procedural bouncing clips and the VGGSound folder reader."""

import json

import numpy as np
import pytest
import torch

from fourfold.data.bouncing import BouncingConfig, BouncingDataset, make_clip, write_clip
from fourfold.data.vggsound import ClipFolderError, VGGSoundClips


def test_clip_is_deterministic_and_consistent():
    a, b = make_clip(7), make_clip(7)
    assert np.array_equal(a.video, b.video) and np.array_equal(a.audio, b.audio)
    assert not np.array_equal(make_clip(8).audio, a.audio)
    cfg = BouncingConfig()
    assert a.video.shape == (cfg.n_frames, 64, 64, 3) and a.audio.shape == (cfg.n_samples,)
    assert np.allclose(a.stems.sum(0), a.audio, atol=1e-5)  # no hum by default
    for k in range(2):
        o = a.onsets[k]
        assert len(o) >= 2 and np.all(np.diff(o) >= 0.15) and o.min() >= 0 and o.max() < cfg.duration
        # each stem is silent before its first onset and sounds right after it
        first = int(o[0] * cfg.sample_rate)
        assert np.abs(a.stems[k, : max(first - 1, 0)]).max() < 1e-6
        assert np.abs(a.stems[k, first : first + 400]).max() > 1e-3
        # masks are the drawn object's box and stay in the object's half of the frame
        assert a.masks[k].any(axis=(1, 2)).all()
        cols = np.nonzero(a.masks[k].any(axis=(0, 1)))[0]
        assert (cols < 32).all() if k == 0 else (cols >= 32).all()
    assert a.caption.startswith("a ") and all(c.endswith("bounces") for c in a.captions)


def test_impact_frame_shows_object_on_floor():
    c = make_clip(3)
    for k in range(2):
        for t in c.onsets[k]:
            f = round(t * c.fps)
            if f < len(c.boxes[k]):
                assert c.boxes[k, f, 3] * 64 >= 64 - 4 - 2  # the box bottom touches the floor line


def test_gain_independent_of_hop_height():
    gains, hops = [], []
    for s in range(40):
        c = make_clip(s)
        for o, g in zip(c.onsets, c.gains_db, strict=True):
            hops += list(np.diff(o))
            gains += list(g[1:])
    assert abs(np.corrcoef(gains, hops)[0, 1]) < 0.15


def test_dataset_items_and_bad_config():
    ds = BouncingDataset(3, seed=5)
    item = ds[1]
    assert item["video"].dtype == np.uint8 and item["mask"].all() and item["sr"] == 16000
    with pytest.raises(ValueError, match="n_objects"):
        BouncingConfig(n_objects=5)
    with pytest.raises(ValueError, match="hop_range"):
        BouncingConfig(hop_range=(0.05, 0.1))


def test_vggsound_reader(tmp_path):
    clip = make_clip(1)
    (tmp_path / "video").mkdir()
    write_clip(clip, tmp_path / "video", "abc_000010")
    (tmp_path / "video" / "bad_000000.mp4").write_bytes(b"not a video at all")
    (tmp_path / "vggsound.csv").write_text(
        "abc,10,dog barking,test\nbad,0,cat,test\nmissing,3,cat,test\nzzz,4,car,train\n"
    )
    (tmp_path / "captions.jsonl").write_text(
        json.dumps({"id": "abc_000010", "caption": "balls bounce"}) + "\n"
    )
    ds = VGGSoundClips(tmp_path, split="test")
    assert len(ds) == 1 and {s for s, _ in ds.skipped} == {"bad_000000", "missing_000003"}
    item = ds[0]
    assert item["caption"] == "balls bounce" and item["video"].shape[1:] == (64, 64, 3)
    assert item["audio"].ndim == 1 and abs(len(item["audio"]) - len(clip.audio)) < 2048
    assert json.loads((tmp_path / "video" / "abc_000010.json").read_text())["objects"][0]["onsets"]


def test_vggsound_reader_errors(tmp_path):
    with pytest.raises(ClipFolderError, match=r"vggsound\.csv"):
        VGGSoundClips(tmp_path)
    (tmp_path / "vggsound.csv").write_text("abc,10,dog\n")
    with pytest.raises(ClipFolderError, match="4 fields"):
        VGGSoundClips(tmp_path)
    (tmp_path / "vggsound.csv").write_text("abc,10,dog,test\n")
    (tmp_path / "captions.jsonl").write_text("{broken\n")
    with pytest.raises(ClipFolderError, match=r"captions\.jsonl:1"):
        VGGSoundClips(tmp_path)


def test_vggsound_silent_audio_is_an_error(tmp_path):
    import soundfile as sf

    from fourfold.audio.io import AudioError

    (tmp_path / "video").mkdir()
    (tmp_path / "audio").mkdir()
    write_clip(make_clip(2), tmp_path / "video", "qq_000001")
    sf.write(tmp_path / "audio" / "qq_000001.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "vggsound.csv").write_text("qq,1,drums,test\n")
    ds = VGGSoundClips(tmp_path)
    assert len(ds) == 1 and ds.fallback_captions == 1
    with pytest.raises(AudioError, match="silent"):
        ds[0]


def test_offscreen_hum_is_invisible_and_follows_its_envelope():
    from fourfold.audio.loudness import loudness_db
    from fourfold.audio.mel import MelConfig
    from fourfold.drawaudio.data import OffscreenHum, procedural_clip, with_offscreen_hum

    cfg = BouncingConfig()
    plain, a, b = make_clip(11, cfg), procedural_clip(11, cfg), procedural_clip(11, cfg)
    assert np.array_equal(a.audio, b.audio)  # deterministic
    # video, masks, stems, onsets and gains are untouched: the hum is in the mix only
    assert np.array_equal(a.video, plain.video) and np.array_equal(a.stems, plain.stems)
    assert all(np.array_equal(x, y) for x, y in zip(a.onsets, plain.onsets, strict=True))
    hum = a.audio - plain.audio
    info = a.meta["offscreen_hum"]
    assert all(-24.0 <= g <= 0.0 for g in info["knot_db"]) and a.hum
    # between impacts the mix's frame loudness is the hum's level: level + the envelope in dB
    t = np.arange(cfg.n_samples) / cfg.sample_rate
    env = 10 ** ((info["level_db"] + np.interp(t, info["knot_t"], info["knot_db"])) / 20)
    assert np.allclose(np.abs(hum), np.abs(env * np.sin(2 * np.pi * 120.0 * t + info["phase"])), atol=1e-6)
    quiet = loudness_db(torch.from_numpy(plain.audio), MelConfig.tiny()).numpy() < -90
    hum_db = loudness_db(torch.from_numpy(a.audio), MelConfig.tiny()).numpy()
    assert quiet.any() and hum_db[quiet].min() > -24 - 20 - 10  # no digital silence left in the mix
    assert with_offscreen_hum(plain, None) is plain
    assert with_offscreen_hum(plain, OffscreenHum(prob=0.0)) is plain
    with pytest.raises(ValueError, match="gain_db"):
        OffscreenHum(gain_db=(0.0, 6.0))
