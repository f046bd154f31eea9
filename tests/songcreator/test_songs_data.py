import json

import numpy as np
import pytest
import soundfile as sf

from fourfold.data.songs import KEY_NAMES, MAJOR, MINOR, ProceduralSongs, SongDataError, SongStems, parse_lrc
from fourfold.songcreator.oracle import ProceduralLabelTokenizer


@pytest.fixture(scope="module")
def songs():
    return ProceduralSongs(6, seconds=4.0, seed=3)


def test_deterministic_and_seeded(songs):
    again = ProceduralSongs(6, seconds=4.0, seed=3)
    assert np.array_equal(songs[2].vocals, again[2].vocals)
    assert not np.array_equal(songs[2].vocals, ProceduralSongs(6, seconds=4.0, seed=4)[2].vocals)


def test_labels_are_consistent(songs):
    for i in range(len(songs)):
        c = songs[i]
        assert c.vocals.shape == c.accompaniment.shape == (64000,)
        assert 80 <= c.bpm <= 140 and 0 <= c.key < 24
        scale = MINOR if c.key >= 12 else MAJOR
        pcs = {(c.key % 12 + s) % 12 for s in scale}
        assert all(s.midi % 12 in pcs for s in c.syllables)  # melody on scale tones
        assert all(root in pcs for _, root, _ in c.chords)  # diatonic chords
        assert np.allclose(np.diff(c.beats), 60 / c.bpm)
        assert c.lrc.startswith("[00:00")
        assert np.abs(c.mixture).max() < 2.0


def test_stems_are_separate(songs):
    c = songs[0]
    # silence in the vocal stem between syllables (rests), none of the drums leak into it
    gaps = [
        (a.onset + a.duration, b.onset)
        for a, b in zip(c.syllables, c.syllables[1:], strict=False)
        if b.onset - (a.onset + a.duration) > 0.05
    ]
    for g0, g1 in gaps:
        seg = c.vocals[int(g0 * 16000) + 10 : int(g1 * 16000) - 10]
        assert np.abs(seg).max() < 1e-6


def test_vocal_pitch_follows_labels(songs):
    c = songs[1]
    s = max(c.syllables, key=lambda s: s.duration)
    a = int((s.onset + 0.05) * 16000)
    seg = c.vocals[a : a + 2048] * np.hanning(2048)
    spec = np.abs(np.fft.rfft(seg, 16384))
    freqs = np.fft.rfftfreq(16384, 1 / 16000)
    f0 = 440 * 2 ** ((s.midi - 69) / 12)
    # the harmonic comb is spaced by f0: energy at multiples of f0 beats energy halfway between them
    harm = [spec[np.argmin(abs(freqs - k * f0))] for k in range(1, 6)]
    between = [spec[np.argmin(abs(freqs - (k + 0.5) * f0))] for k in range(1, 6)]
    assert np.sum(harm) > 3 * np.sum(between)


def test_other_clip_shares_the_song(songs):
    a, b = songs.clip(0), songs.other_clip(0)
    assert a.key == b.key and a.bpm == b.bpm and a.singer == b.singer
    assert [s.word for s in a.syllables] != [s.word for s in b.syllables]


def test_oracle_tokens(songs):
    tok = ProceduralLabelTokenizer()
    c = songs[0]
    codes = tok.encode_clip(c)
    assert all(len(v) == 100 for v in codes.values())
    assert codes["vocals"].max() < tok.vocal_codes and codes["accompaniment"].max() < tok.accomp_codes
    pcs = tok.vocal_pitch_classes(codes["vocals"])
    sung = {s.midi % 12 for s in c.syllables}
    assert set(pcs[pcs >= 0].tolist()) <= sung
    assert tok.vocal_onsets(codes["vocals"]).sum() == sum(int(s.onset * 25) < 100 for s in c.syllables)
    roots = {r + 12 * m for _, r, m in c.chords}
    assert set(tok.chords(codes["accompaniment"]).tolist()) <= roots
    assert (tok.drums(codes["accompaniment"]) == 1).sum() == sum(1 for _, k in c.drums if k == 1)


def test_write_and_read_back(tmp_path, songs):
    small = ProceduralSongs(2, seconds=3.0, seed=1)
    small.write(tmp_path)
    reader = SongStems(tmp_path, "train")
    ids = reader.songs()
    assert ids == [small[0].id, small[1].id]
    clips = reader.clips(ids[0])
    assert len(clips) == 1
    assert np.allclose(clips[0]["vocals"], small[0].vocals, atol=1e-4)
    assert clips[0]["lyrics"].split() == [s.word for s in small[0].syllables]
    assert (
        json.loads((tmp_path / "songs" / ids[0] / "labels.json").read_text())["key"]
        == KEY_NAMES[small[0].key]
    )


def _song(root, name, seconds=70.0, lrc=None, acc_seconds=None, sr=8000):
    d = root / "songs" / name
    d.mkdir(parents=True)
    sf.write(d / "vocals.wav", np.full(int(seconds * sr), 0.1, np.float32), sr)
    sf.write(d / "no_vocals.flac", np.full(int((acc_seconds or seconds) * sr), 0.1, np.float32), sr)
    if lrc is not None:
        (d / "lyrics.lrc").write_text(lrc)
    return d


def test_packing_cuts_mid_gap(tmp_path):
    lrc = "".join(f"[00:{10 * k:02d}.00]line {k}\n" for k in range(6))  # lines every 10 s to 60 s
    _song(tmp_path, "s1", lrc=lrc)
    clips = SongStems(tmp_path, "train", max_seconds=25.0).clips("s1")
    assert all(len(c["vocals"]) <= 25 * 8000 for c in clips)
    assert sum(len(c["vocals"]) for c in clips) == 70 * 8000
    texts = [t for c in clips for t in c["lyrics"].splitlines()]
    assert texts == [f"line {k}" for k in range(6)]  # every line once, none split
    assert clips[0]["lines"][0]["start"] == 0.0


def test_broken_trees_fail_clearly(tmp_path):
    with pytest.raises(SongDataError, match="songs/"):
        SongStems(tmp_path / "nothing")
    d = _song(tmp_path, "bad", seconds=5, lrc="[00:01.00]ok\n", acc_seconds=6)
    reader = SongStems(tmp_path)
    with pytest.raises(SongDataError, match=r"no_vocals\.flac"):
        reader.load_song("bad")
    (d / "no_vocals.flac").unlink()
    with pytest.raises(SongDataError, match="accompaniment"):
        reader.load_song("bad")
    _song(tmp_path, "badlrc", seconds=5, lrc="[00:01.00]ok\nthis has no time\n")
    with pytest.raises(SongDataError, match=r"lyrics.lrc:2"):
        reader.load_song("badlrc")
    _song(tmp_path, "late", seconds=5, lrc="[00:09.00]too late\n")
    with pytest.raises(SongDataError, match="after the audio ends"):
        reader.load_song("late")
    d = _song(tmp_path, "nolyrics", seconds=5)
    with pytest.raises(SongDataError, match="no lyrics"):
        reader.load_song("nolyrics")
    (d / "vocals.wav").write_bytes(b"not audio")
    (d / "lyrics.lrc").write_text("[00:00.00]x\n")
    with pytest.raises(SongDataError, match=r"vocals\.wav"):
        reader.load_song("nolyrics")


def test_parse_lrc_orders_and_ends_lines():
    lines = parse_lrc("[ar:someone]\n[00:05.00]b\n[00:01.50][00:08.00]a\n", duration=10.0)
    assert [(x["start"], x["end"], x["text"]) for x in lines] == [
        (1.5, 5.0, "a"),
        (5.0, 8.0, "b"),
        (8.0, 10.0, "a"),
    ]
