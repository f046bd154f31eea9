import numpy as np
import pytest
import torch

from fourfold.data.songs import ProceduralSongs
from fourfold.nn.modeling import CheckpointError
from fourfold.songcreator.config import DSLMConfig
from fourfold.songcreator.dslm import DSLM
from fourfold.songcreator.lyrics import LyricsError, LyricsFrontend
from fourfold.songcreator.oracle import ProceduralLabelTokenizer
from fourfold.songcreator.pipeline import SongCreatorPipeline
from fourfold.songcreator.renderer import CentroidRenderer, RendererConfig, TokenMelRenderer, renderer_loss

SR = 16000


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    songs = ProceduralSongs(3, seconds=2.0, seed=5)
    tok = ProceduralLabelTokenizer()
    fe = LyricsFrontend()
    cfg = DSLMConfig.tiny(codebook_size=tok.codebook_size, lyrics_vocab_size=fe.vocab_size)
    renderer = CentroidRenderer(RendererConfig.tiny(tok.codebook_size))
    codes = [tok.encode_clip(songs[i]) for i in range(3)]
    for kind, attr in (("vocals", "vocals"), ("accompaniment", "accompaniment"), ("song", "mixture")):
        renderer.fit([c[kind] for c in codes], [getattr(songs[i], attr) for i in range(3)], kind)
    pipe = SongCreatorPipeline(DSLM(cfg), fe, tokenizer=tok, renderer=renderer)
    return pipe, songs, codes


def test_every_verb_runs(setup):
    pipe, _, codes = setup
    c = codes[0]
    kw = {"seed": 0, "max_seconds": 1.0}
    out = pipe.lyrics_to_song("see the moon", **kw)
    assert set(out.tokens) == {"song", "vocals", "accompaniment"}
    assert out.song is not None and out.song.shape == (len(out.tokens["song"]) * 640,)
    assert pipe.lyrics_to_vocals("go home", vocal_only=True, **kw).accompaniment is None
    assert pipe.lyrics_to_vocals("go home", **kw).vocals is not None
    a2s = pipe.accompaniment_to_song(c["accompaniment"], lyrics="go", **kw)
    assert len(a2s.tokens["vocals"]) == len(c["accompaniment"])
    assert torch.equal(pipe.vocals_to_song(c["vocals"], **kw).tokens["vocals"], c["vocals"])
    assert pipe.continue_music(c["accompaniment"][:10], **kw).vocals is None
    assert pipe.continue_song("la", c["vocals"][:10], c["accompaniment"][:10], **kw).song is not None
    assert pipe.continue_vocals("la", c["vocals"][:10], **kw).vocals is not None


def test_edit_keeps_tokens_and_audio_outside_span(setup):
    pipe, songs, codes = setup
    c, clip = codes[1], songs[1]
    out = pipe.edit_vocals_in_song(
        "new words here",
        {"codes": c["vocals"], "audio": (clip.vocals, SR)},
        {"codes": c["accompaniment"], "audio": (clip.accompaniment, SR)},
        span=(0.8, 1.2),
        seed=1,
    )
    # the waveforms are kept outside the span, up to the 20 ms crossfades
    assert out.vocals.shape == clip.vocals.shape
    a, b, half = int(0.8 * SR), int(1.2 * SR), int(0.01 * SR)
    assert np.array_equal(out.vocals[: a - half], clip.vocals[: a - half])
    assert np.array_equal(out.vocals[b + half :], clip.vocals[b + half :])
    assert not np.array_equal(out.vocals[a + half : b - half], clip.vocals[a + half : b - half])


def test_edit_with_codes(setup):
    pipe, _, codes = setup
    c = codes[2]
    out = pipe.edit_vocals("new words", c["vocals"], span=(0.4, 1.0), seed=0)
    s, e = 10, 25
    n_new = len(out.tokens["vocals"]) - (len(c["vocals"]) - (e - s))
    assert torch.equal(out.tokens["vocals"][:s], c["vocals"][:s])
    assert torch.equal(out.tokens["vocals"][s + n_new :], c["vocals"][e:])


def test_errors(setup):
    pipe, _, _ = setup
    with pytest.raises(ValueError, match="unknown SongCreator task"):
        pipe.generate("remix", lyrics="la")
    with pytest.raises(LyricsError, match="empty"):
        pipe.lyrics_to_song("   ")
    with pytest.raises(ValueError, match="BEST-RQ tokenizer"):
        pipe.vocals_to_song((np.zeros(1600, np.float32), SR))


def test_round_trip(tmp_path, setup):
    pipe, _, _ = setup
    pipe.save_pretrained(tmp_path / "p")
    back = SongCreatorPipeline.from_pretrained(tmp_path / "p")
    a = pipe.lyrics_to_song("see the moon", seed=3, max_seconds=1.0)
    b = back.lyrics_to_song("see the moon", seed=3, max_seconds=1.0)
    assert torch.equal(a.tokens["song"], b.tokens["song"]) and np.allclose(a.song, b.song)
    with pytest.raises(CheckpointError, match=r"pipeline\.json"):
        SongCreatorPipeline.from_pretrained(tmp_path)


def test_token_mel_renderer_learns(setup):
    _, songs, codes = setup
    torch.manual_seed(0)
    r = TokenMelRenderer(RendererConfig.tiny())
    from fourfold.audio.mel import mel_spectrogram

    mels = torch.stack(
        [mel_spectrogram(torch.as_tensor(songs[i].vocals), r.config.mel_config()) for i in range(3)]
    )
    batch = {"tokens": torch.stack([c["vocals"] for c in codes]), "mel": mels, "kind": "vocals"}
    opt = torch.optim.Adam(r.parameters(), 3e-3)
    first = renderer_loss(r, batch).item()
    for _ in range(60):
        loss = renderer_loss(r, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    wav = r.render(batch["tokens"][:1], "vocals")
    assert wav.shape == (1, 50 * 640) and torch.isfinite(wav).all()
    with pytest.raises(ValueError, match="kind"):
        r.render(batch["tokens"][:1], "drums")
