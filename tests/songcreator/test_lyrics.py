import json

import pytest

from fourfold.nn.modeling import CheckpointError
from fourfold.songcreator.lyrics import BOS, EOS, LINE, NULL, WORD, LyricsError, LyricsFrontend


@pytest.fixture(scope="module")
def fe():
    return LyricsFrontend()


def test_cmudict_phonemes_and_char_fallback(fe):
    ids = fe.encode("Hello zzqx")
    units = fe.decode(ids)
    assert units[0] == "<bos>" and units[-1] == "<eos>"
    assert units[1:5] == ["HH", "AH", "L", "OW"]  # first pronunciation, stress removed
    assert units[5] == "<word>"
    assert units[6:10] == ["'z'", "'z'", "'q'", "'x'"]
    assert ids[-2] == LINE and ids[-3] == WORD


def test_other_scripts_are_characters_and_fit_adds_them(fe):
    fe2 = LyricsFrontend().fit(["你好 world"])
    units = fe2.decode(fe2.encode("你好"))
    assert units[1:3] == ["'你'", "'好'"]
    assert fe.decode(fe.encode("你好"))[1] == "<unk>"


def test_structure_tags_lrc_and_lines(fe):
    ids = fe.encode("[00:01.50][verse] la la\n[00:03.00][chorus] oh")
    units = fe.decode(ids)
    assert "[verse]" in units and "[chorus]" in units
    assert units.count("<line>") == 2
    assert not any(":" in u for u in units)


def test_errors(fe):
    with pytest.raises(LyricsError, match="empty"):
        fe.encode("  \n ")
    with pytest.raises(LyricsError, match=r"\[solo\]"):
        fe.encode("[solo] la")
    with pytest.raises(LyricsError, match="max_tokens"):
        fe.encode("hello " * 100)
    ids = fe.encode("hello " * 100, truncate=True)
    assert len(ids) == 256 and ids[0] == BOS and ids[-1] == EOS
    assert fe.encode(None) == [NULL]
    with pytest.raises(ValueError, match="backend"):
        LyricsFrontend("g2p")


def test_char_backend(fe):
    ch = LyricsFrontend("char")
    assert ch.decode(ch.encode("hi"))[1:3] == ["'h'", "'i'"]


def test_vocab_round_trip(tmp_path):
    fe = LyricsFrontend(max_tokens=64).fit(["über"])
    path = fe.save(tmp_path)
    assert json.loads(path.read_text())["chars"][-1] == "ü"
    back = LyricsFrontend.load(tmp_path)
    assert back.tokens == fe.tokens and back.max_tokens == 64
    assert back.encode("über alles") == fe.encode("über alles")
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="lyrics"):
        LyricsFrontend.load(tmp_path)
    with pytest.raises(CheckpointError, match="missing"):
        LyricsFrontend.load(tmp_path / "nope")
