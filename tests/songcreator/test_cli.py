import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from fourfold.songcreator.cli import app
from fourfold.songcreator.config import DSLMConfig
from fourfold.songcreator.dslm import DSLM
from fourfold.songcreator.lyrics import LyricsFrontend
from fourfold.songcreator.oracle import ProceduralLabelTokenizer
from fourfold.songcreator.pipeline import SongCreatorPipeline
from fourfold.songcreator.renderer import CentroidRenderer, RendererConfig

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    tok, fe = ProceduralLabelTokenizer(), LyricsFrontend()
    torch.manual_seed(0)
    dslm = DSLM(DSLMConfig.tiny(codebook_size=tok.codebook_size, lyrics_vocab_size=fe.vocab_size))
    SongCreatorPipeline(
        dslm, fe, tokenizer=tok, renderer=CentroidRenderer(RendererConfig.tiny())
    ).save_pretrained(d)
    return d


def test_generate_writes_outputs(tmp_path, model_dir):
    lrc = tmp_path / "x.lrc"
    lrc.write_text("[00:00.00]see the moon\n[00:01.00]go home\n")
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        [
            "generate",
            "--task",
            "lyrics-to-song",
            "--lyrics",
            str(lrc),
            "--model",
            str(model_dir),
            "--max-seconds",
            "1",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} == {
        "song.wav",
        "vocals.wav",
        "accompaniment.wav",
        "tokens.safetensors",
        "meta.json",
    }
    assert json.loads((out / "meta.json").read_text())["task"] == "lyrics-to-song"


def test_edit_from_codes(tmp_path, model_dir):
    codes = tmp_path / "v.safetensors"
    save_file({"codes": torch.randint(0, 121, (50,))}, str(codes))
    out = tmp_path / "e"
    r = runner.invoke(
        app,
        [
            "edit",
            "--mode",
            "vocals",
            "--span",
            "0.4:1.0",
            "--lyrics",
            "new words",
            "--vocals",
            str(codes),
            "--model",
            str(model_dir),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    toks = load_file(str(out / "tokens.safetensors"))["vocals"]
    orig = load_file(str(codes))["codes"]
    assert torch.equal(toks[:10], orig[:10])


def test_bad_arguments(tmp_path, model_dir):
    r = runner.invoke(app, ["edit", "--mode", "karaoke", "--model", str(model_dir)])
    assert r.exit_code != 0 and "--mode" in r.output
    r = runner.invoke(app, ["edit", "--span", "abc", "--model", str(model_dir)])
    assert r.exit_code != 0 and "--span" in r.output
    r = runner.invoke(app, ["eval", "--model", str(model_dir), "--metrics", "mos"])
    assert r.exit_code != 0 and "unknown metric" in r.output
    r = runner.invoke(app, ["generate", "--task", "remix", "--lyrics", "la", "--model", str(model_dir)])
    assert r.exit_code != 0


def test_data_synth(tmp_path):
    r = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "songs"), "--n", "2", "--seconds", "2"])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "songs" / "splits" / "train.txt").read_text().split()) == 2


def test_train_dslm_procedural(tmp_path):
    r = runner.invoke(
        app,
        [
            "train",
            "--stage",
            "dslm",
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--songs",
            "4",
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "pipeline" / "dslm" / "model.safetensors").is_file()
