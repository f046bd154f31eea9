"""DSLM training from a folder of token files (the `data tokenize` layout) through the CLI and Trainer."""

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from fourfold.nn.modeling import CheckpointError
from fourfold.songcreator.cli import app
from fourfold.songcreator.lyrics import NULL, LyricsFrontend
from fourfold.songcreator.pipeline import SongCreatorPipeline
from fourfold.songcreator.token_data import load_token_items, token_codebook_size, write_token_file


def _write(root, n_songs=2, clips=2, T=30, K=40):
    g = torch.Generator().manual_seed(0)
    for s in range(n_songs):
        for c in range(clips):
            codes = {
                k: torch.randint(0, K, (T,), generator=g) for k in ("vocals", "accompaniment", "mixture")
            }
            lyrics = None if c == 1 else "see the moon\ngo home"
            write_token_file(
                root / f"song{s}@{c * 10:.2f}.safetensors",
                codes,
                clip_id=f"song{s}@{c * 10:.2f}",
                lyrics=lyrics,
                codebook_size=K,
            )
    return root


def test_items_and_prompts(tmp_path):
    root = _write(tmp_path)
    fe = LyricsFrontend()
    items = load_token_items(root, fe, max_frames=20)
    assert len(items) == 4 and token_codebook_size(root) == 40
    assert all(len(it["vocals"]) == 20 for it in items)
    assert items[1]["lyrics"] == [NULL] and items[0]["lyrics"] == fe.encode("see the moon\ngo home")
    # prompts come from the other clip of the same song
    assert torch.equal(items[0]["prompt_vocals"], items[1]["vocals"])
    assert not any(f.name.startswith(".") for f in root.iterdir())  # no temp files left


def test_bad_token_files(tmp_path):
    fe = LyricsFrontend()
    with pytest.raises(CheckpointError, match="no such token directory"):
        load_token_items(tmp_path / "missing", fe)
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors"):
        load_token_items(tmp_path, fe)
    save_file({"vocals": torch.zeros(5, dtype=torch.long)}, str(tmp_path / "a@0.safetensors"))
    with pytest.raises(CheckpointError, match=r"a@0\.safetensors: token file lacks"):
        load_token_items(tmp_path, fe)
    z = torch.zeros(5, dtype=torch.long)
    save_file(
        {"vocals": z, "accompaniment": z.clone(), "mixture": torch.zeros(9, dtype=torch.long)},
        str(tmp_path / "a@0.safetensors"),
    )
    with pytest.raises(CheckpointError, match="more than one frame"):
        load_token_items(tmp_path, fe)
    (tmp_path / "a@0.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_token_items(tmp_path, fe)


def test_cli_trains_dslm_from_token_files(tmp_path):
    root = _write(tmp_path / "tokens")
    r = CliRunner().invoke(
        app,
        [
            "train",
            "--stage",
            "dslm",
            "--tokens",
            str(root),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "3",
            "--batch-size",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output
    pipe = SongCreatorPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert pipe.dslm.config.codebook_size == 40
    out = pipe.lyrics_to_song("go home", seed=0, max_seconds=0.4)
    assert int(out.tokens["vocals"].max()) < 40


def test_cli_trains_renderer(tmp_path):
    """`train --stage renderer` on procedural songs and on a real-layout tree with a BEST-RQ tokenizer."""
    from fourfold.data.songs import ProceduralSongs
    from fourfold.songcreator.bestrq import (
        BestRQ,
        BestRQConfig,
        SemanticTokenizer,
        SemanticVQ,
        SemanticVQConfig,
    )
    from fourfold.songcreator.ldm_renderer import LatentDiffusionRenderer

    args = ["train", "--stage", "renderer", "--steps", "2", "--batch-size", "2", "--songs", "2"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "proc")])
    assert r.exit_code == 0, r.output
    assert LatentDiffusionRenderer.from_pretrained(tmp_path / "proc" / "renderer").config.codebook_size == 325
    ProceduralSongs(2, seconds=2.0, seed=0).write(tmp_path / "tree")
    torch.manual_seed(0)
    enc = BestRQ(BestRQConfig.tiny())
    SemanticTokenizer(enc, SemanticVQ(SemanticVQConfig.tiny(input_dim=enc.config.dim))).save_pretrained(
        tmp_path / "tok"
    )
    r = CliRunner().invoke(app, [*args, "--data", str(tmp_path / "tree"), "--out", str(tmp_path / "real")])
    assert r.exit_code != 0 and "--tokenizer" in r.output
    r = CliRunner().invoke(
        app,
        [
            *args,
            "--data",
            str(tmp_path / "tree"),
            "--tokenizer",
            str(tmp_path / "tok"),
            "--out",
            str(tmp_path / "real"),
        ],
    )
    assert r.exit_code == 0, r.output
    cfg = LatentDiffusionRenderer.from_pretrained(tmp_path / "real" / "renderer").config
    assert (cfg.sample_rate, cfg.token_rate, cfg.codebook_size) == (16000, 25.0, 256)
