"""The shipped pipeline folder and the latent-diffusion renderer (spec §2.5)."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fourfold.nn.modeling import CheckpointError
from fourfold.songcreator.cli import app
from fourfold.songcreator.ldm_renderer import LatentDiffusionRenderer, LatentDiffusionRendererConfig
from fourfold.songcreator.pipeline import SHIPPED_PIPELINE, SongCreatorPipeline


@pytest.fixture(scope="module")
def shipped():
    return SongCreatorPipeline.shipped()


def test_shipped_pipeline_is_trained(shipped):
    assert isinstance(shipped.renderer, LatentDiffusionRenderer)
    out = shipped.lyrics_to_song("see the moon\ngo home now", seed=0, max_seconds=3.0)
    assert out.song is not None and out.sample_rate == 16000 and np.isfinite(out.song).all()
    assert out.song.shape == (len(out.tokens["song"]) * 640,)
    # trained: every stream stays inside its own code range (vocals < 121, accompaniment < 100),
    # which a random model over 325 codes would not
    assert int(out.tokens["vocals"].max()) < 121 and int(out.tokens["accompaniment"].max()) < 100
    g = torch.Generator().manual_seed(0)
    assert int(torch.randint(0, 325, (len(out.tokens["vocals"]),), generator=g).max()) >= 121


def test_missing_and_partial_folders(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        SongCreatorPipeline.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match=r"pipeline\.json"):
        SongCreatorPipeline.from_pretrained(tmp_path)
    d = tmp_path / "p"
    shutil.copytree(SHIPPED_PIPELINE, d)
    shutil.rmtree(d / "renderer")
    with pytest.raises(CheckpointError, match=r"partial pipeline.*renderer"):
        SongCreatorPipeline.from_pretrained(d)
    (d / "pipeline.json").write_text(json.dumps({"renderer": "Vocoder9000", "dslm": "dslm"}))
    with pytest.raises(CheckpointError, match="partial pipeline"):
        SongCreatorPipeline.from_pretrained(d)
    shutil.copytree(SHIPPED_PIPELINE / "renderer", d / "renderer")
    with pytest.raises(CheckpointError, match="unknown renderer 'Vocoder9000'"):
        SongCreatorPipeline.from_pretrained(d)
    (d / "pipeline.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        SongCreatorPipeline.from_pretrained(d)


def test_save_round_trip_is_complete(tmp_path, shipped):
    shipped.save_pretrained(tmp_path / "copy")
    back = SongCreatorPipeline.from_pretrained(tmp_path / "copy")
    a = shipped.lyrics_to_vocals("go home", seed=2, max_seconds=1.0)
    b = back.lyrics_to_vocals("go home", seed=2, max_seconds=1.0)
    assert torch.equal(a.tokens["vocals"], b.tokens["vocals"]) and np.array_equal(a.vocals, b.vocals)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_ldm_renderer_is_conditioned_on_tokens(tmp_path):
    torch.manual_seed(0)
    r = LatentDiffusionRenderer(LatentDiffusionRendererConfig.tiny())
    torch.nn.init.normal_(r.embed.weight, std=3.0)  # a random renderer: make the conditioning visible
    toks = torch.randint(0, 325, (1, 13))
    a = r.generate_mel(toks, "vocals", seed=0)
    assert a.shape == (1, 64, 52)
    assert torch.equal(a, r.generate_mel(toks, "vocals", seed=0))  # seeded
    other = toks.clone()
    other[0, 5] = (other[0, 5] + 1) % 325
    b = r.generate_mel(other, "vocals", seed=0)
    assert not torch.equal(a, b)
    assert not torch.equal(a, r.generate_mel(toks, "accompaniment", seed=0))
    assert r.render(toks, "vocals").shape == (1, 13 * 640)
    with pytest.raises(ValueError, match="token ids"):
        r.render(torch.tensor([[325]]), "vocals")
    r.save_pretrained(tmp_path / "r")
    assert torch.equal(
        LatentDiffusionRenderer.from_pretrained(tmp_path / "r").generate_mel(toks, "vocals"), a
    )


def test_trained_renderer_beats_unconditional_control(shipped):
    """Held-out songs: rendering a clip's own tokens is closer to its true log-mel than rendering another
    clip's tokens (a sample that ignores this clip: the unconditional control)."""
    from fourfold.data.songs import ProceduralSongs
    from fourfold.songcreator.demo import KEYS, TEMPOS
    from fourfold.songcreator.oracle import ProceduralLabelTokenizer
    from fourfold.songcreator.ship import renderer_reconstruction, training_examples

    held = ProceduralSongs(4, seconds=2.0, seed=7, keys=KEYS, tempos=TEMPOS)
    m = renderer_reconstruction(shipped.renderer, training_examples(held, ProceduralLabelTokenizer()))
    assert m["own_tokens_l1"] <= 0.85 * m["other_tokens_l1"], m


def test_cli_generate_uses_shipped_pipeline(tmp_path):
    r = CliRunner().invoke(
        app, ["generate", "--lyrics", "see the moon", "--max-seconds", "1", "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 0, r.output
    assert {p.name for p in (tmp_path / "o").iterdir()} >= {
        "song.wav",
        "vocals.wav",
        "accompaniment.wav",
        "tokens.safetensors",
    }


def test_shipped_dslm_follows_held_out_lyrics(shipped):
    """Spec §8.6 on the shipped DSLM: vocals sung from held-out lyrics (BR) have a vowel error rate at least
    0.2 below the same samples scored against shuffled lyrics."""
    from fourfold.songcreator.demo import _setup, bca_ablation, vowel_error_rates

    _, _, _, held = _setup(12, seed=1, prompts=False)
    sung = bca_ablation(shipped.dslm, held, 12, with_lyrics=True, strategies=("BR",))
    ver = vowel_error_rates(sung["BR"]["samples"], held)
    assert ver["own_lyrics"] <= ver["shuffled_lyrics"] - 0.2, ver


@pytest.mark.slow
def test_shipped_dslm_carries_the_vocal_prompt_key(shipped):
    """Spec §8.8 on the shipped DSLM, 64 held-out songs: with only a 3 s vocal prompt from another clip of
    the song (no lyrics), the generated song is in the song's key in >= 70% (chance 0.25)."""
    from fourfold.songcreator.demo import _setup, prompt_carry

    songs, _, tok, _ = _setup(64, seed=1, prompts=False)
    carry = prompt_carry(shipped.dslm, songs, tok, 64)
    assert carry["key"] >= 0.7, carry


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="tempo from a vocal prompt alone is not learned yet (docs: Not done)")
def test_shipped_dslm_carries_the_vocal_prompt_key_and_tempo(shipped):
    """Spec §8.8's full statement: key *and* tempo carry over in >= 70% (chance 0.125). Measured 0.375
    (tempo 0.45): a known gap, kept as a strict xfail so that passing it is noticed."""
    from fourfold.songcreator.demo import _setup, prompt_carry

    songs, _, tok, _ = _setup(64, seed=1, prompts=False)
    assert prompt_carry(shipped.dslm, songs, tok, 64)["both"] >= 0.7
