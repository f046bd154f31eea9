"""Audio/video I/O: round trips keep rate, length and frame count; bad files raise clear errors."""

import numpy as np
import pytest

from fourfold.audio.io import (
    AudioError,
    VideoError,
    frame_times,
    load_audio,
    mux_audio,
    read_video,
    resample,
    sample_frames,
    save_audio,
    write_video,
)

SR = 16000


def _tone(seconds=0.5, sr=SR, freq=440.0, channels=None):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels is None else np.stack([x * (c + 1) / channels for c in range(channels)])


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_audio_round_trip_keeps_rate_and_length(tmp_path, suffix):
    x = _tone(0.37)
    path = save_audio(tmp_path / f"a{suffix}", x, SR)
    y, sr = load_audio(path)
    assert sr == SR and y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() < 1e-3  # 16-bit quantisation
    assert not list(tmp_path.glob(".tmp-*"))  # the temp file was renamed, not left behind


def test_stereo_and_resampling(tmp_path):
    x = _tone(0.5, channels=2)
    save_audio(tmp_path / "s.wav", x, SR)
    y, sr = load_audio(tmp_path / "s.wav", mono=False)
    assert y.shape == (2, x.shape[1]) and sr == SR
    mono, _ = load_audio(tmp_path / "s.wav")
    np.testing.assert_allclose(mono, y.mean(0), atol=1e-6)
    z, sr2 = load_audio(tmp_path / "s.wav", sr=24000, mono=False)
    assert sr2 == 24000 and z.shape == (2, 12000)
    assert resample(x[0], SR, 8000).shape == (4000,)


def test_bad_audio_files_raise_naming_the_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00junk" * 10)
    with pytest.raises(AudioError, match=r"corrupt\.wav"):
        load_audio(bad)
    save_audio(tmp_path / "silent.wav", np.zeros(1600, np.float32), SR)
    with pytest.raises(AudioError, match="silent"):
        load_audio(tmp_path / "silent.wav")
    y, _ = load_audio(tmp_path / "silent.wav", allow_silent=True)
    assert y.shape == (1600,) and not y.any()
    with pytest.raises(AudioError, match="NaN"):
        save_audio(tmp_path / "nan.wav", np.full(10, np.nan, np.float32), SR)
    assert not (tmp_path / "nan.wav").exists()


def test_empty_audio_file_raises(tmp_path):
    import soundfile as sf

    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")


def _frames(n=20, h=32, w=48):
    """8x8-pixel colour blocks (codec-friendly), a different picture per frame."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 255, size=(n, h // 8, w // 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(blocks.repeat(8, axis=1).repeat(8, axis=2))


def test_video_round_trip_and_mux(tmp_path):
    frames, fps = _frames(), 12.5
    write_video(tmp_path / "v.mp4", frames, fps)
    got, got_fps, audio, sr = read_video(tmp_path / "v.mp4")
    assert got.shape == frames.shape and got.dtype == np.uint8 and got_fps == pytest.approx(fps)
    assert audio is None and sr is None
    assert np.abs(got.astype(float) - frames).mean() < 8  # lossy codec, same pictures in the same order

    long_audio = _tone(3.0)  # longer than the 1.6 s video: must be cut
    mux_audio(tmp_path / "v.mp4", long_audio, SR, tmp_path / "m.mp4")
    got2, fps2, audio2, sr2 = read_video(tmp_path / "m.mp4")
    assert got2.shape[0] == frames.shape[0] and fps2 == pytest.approx(fps)
    assert sr2 == SR and audio2.shape == (round(len(frames) / fps * SR),)
    np.testing.assert_array_equal(got2, got)  # the video stream was copied, not re-encoded
    from_container, sr3 = load_audio(tmp_path / "m.mp4")  # soundfile cannot read mp4: PyAV fallback
    assert sr3 == SR and from_container.shape == audio2.shape
    # AAC is lossy: check the tone survives (dominant frequency)
    spectrum = np.abs(np.fft.rfft(audio2[2048:]))
    assert abs(np.argmax(spectrum) * SR / len(audio2[2048:]) - 440) < 5


def test_write_video_with_audio_and_in_place_mux(tmp_path):
    frames = _frames(10)
    write_video(tmp_path / "w.mp4", frames, 25, audio=_tone(1.0), sr=SR)
    _, _, audio, sr = read_video(tmp_path / "w.mp4")
    assert sr == SR and audio.shape == (round(10 / 25 * SR),)
    mux_audio(tmp_path / "w.mp4", _tone(1.0, freq=880), SR, tmp_path / "w.mp4")  # same path: atomic
    got, _, audio, _ = read_video(tmp_path / "w.mp4")
    assert got.shape[0] == 10 and audio.shape == (6400,)


def test_bad_video_inputs(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        read_video(tmp_path / "nope.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(VideoError, match=r"bad\.mp4"):
        read_video(tmp_path / "bad.mp4")
    with pytest.raises(VideoError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8), 10)
    assert not (tmp_path / "odd.mp4").exists()


def test_timestamp_frame_sampling():
    assert len(frame_times(10.24, 8)) == 82  # Draw an Audio §2.2
    frames = np.arange(25)[:, None, None, None] * np.ones((1, 2, 2, 3), np.int64)  # frame i holds value i
    out = sample_frames(frames, src_fps=25, target_fps=10)
    assert out.shape[0] == 10
    np.testing.assert_array_equal(out[:, 0, 0, 0], np.floor(np.arange(10) / 10 * 25))
