"""``fourfold songcreator <verb>``: generate | edit | train | eval | data | demo.

Heavy imports live inside the commands so that ``fourfold --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="songcreator", help="SongCreator: lyrics-based song generation and editing.", no_args_is_help=True
)
data_app = typer.Typer(
    help="Datasets: synth (procedural songs) | tokenize (real songs -> codes).", no_args_is_help=True
)
app.add_typer(data_app, name="data")

TASK_NAMES = "lyrics-to-song, lyrics-to-vocals, lyrics-to-vocals-only, accompaniment-to-song, vocals-to-song, continue-music"


def _pipeline(model: Path | None):
    """``--model DIR`` or, without it, the shipped trained procedural pipeline."""
    from fourfold.songcreator.pipeline import SHIPPED_PIPELINE, SongCreatorPipeline

    if model is None:
        typer.echo(f"using the shipped procedural-tiny pipeline ({SHIPPED_PIPELINE})", err=True)
        return SongCreatorPipeline.shipped()
    return SongCreatorPipeline.from_pretrained(model)


def _audio_or_codes(path: Path | None):
    """A .safetensors file with a ``codes`` tensor, or an audio file (encoded by the model's tokenizer)."""
    if path is None:
        return None
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if "codes" not in tensors:
            raise typer.BadParameter(f"{path}: expected a tensor named 'codes'")
        return tensors["codes"].long()
    return str(path)


def _write_outputs(out: Path, result, meta: dict) -> None:
    from safetensors.torch import save_file

    from fourfold.audio.io import save_audio
    from fourfold.nn.modeling import atomic_write_dir

    def write(tmp: Path) -> None:
        for kind in ("song", "vocals", "accompaniment"):
            wav = getattr(result, kind)
            if wav is not None:
                save_audio(tmp / f"{kind}.wav", wav, result.sample_rate)
        save_file({k: v.contiguous() for k, v in result.tokens.items()}, str(tmp / "tokens.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")

    atomic_write_dir(out, write)
    typer.echo(f"wrote {out}")


def _lyrics(value: str | None) -> str | None:
    if value is None:
        return None
    p = Path(value)
    return p.read_text(encoding="utf-8") if p.is_file() else value


@app.command()
def generate(
    task: Annotated[str, typer.Option(help=f"one of: {TASK_NAMES}")] = "lyrics-to-song",
    lyrics: Annotated[str | None, typer.Option(help="lyrics text or a .lrc/.txt file")] = None,
    vocal_prompt: Annotated[Path | None, typer.Option(help="audio file or codes .safetensors")] = None,
    accompaniment_prompt: Annotated[Path | None, typer.Option()] = None,
    vocals: Annotated[Path | None, typer.Option(help="a given vocal track (vocals-to-song)")] = None,
    accompaniment: Annotated[
        Path | None, typer.Option(help="a given accompaniment (accompaniment-to-song)")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="pipeline directory (default: the shipped procedural-tiny pipeline)")
    ] = None,
    seed: int = 0,
    top_k: int = 50,
    temperature: float = 0.9,
    max_seconds: float = 30.0,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("songcreator_out"),
) -> None:
    """Generate a song (or stems): writes song/vocals/accompaniment WAVs, tokens.safetensors, meta.json."""
    pipe = _pipeline(model)
    result = pipe.generate(
        task.replace("-", "_"),
        lyrics=_lyrics(lyrics),
        vocal_prompt=_audio_or_codes(vocal_prompt),
        accompaniment_prompt=_audio_or_codes(accompaniment_prompt),
        vocals=_audio_or_codes(vocals),
        accompaniment=_audio_or_codes(accompaniment),
        seed=seed,
        top_k=top_k,
        temperature=temperature,
        max_seconds=max_seconds,
    )
    _write_outputs(out, result, {"task": task, "seed": seed, "top_k": top_k, "temperature": temperature})


@app.command()
def edit(
    mode: Annotated[str, typer.Option(help="song | vocals | vocals-in-song")] = "song",
    span: Annotated[str, typer.Option(help="start:end in seconds, e.g. 3.2:5.0")] = "0:1",
    lyrics: Annotated[str | None, typer.Option(help="the new lyrics (text or file)")] = None,
    vocals: Annotated[Path | None, typer.Option()] = None,
    accompaniment: Annotated[Path | None, typer.Option()] = None,
    model: Annotated[Path | None, typer.Option()] = None,
    seed: int = 0,
    out: Annotated[Path, typer.Option()] = Path("songcreator_edit"),
) -> None:
    """Regenerate a span; everything outside it is kept (tokens exactly, audio up to 20 ms crossfades)."""
    modes = {"song": "edit_song", "vocals": "edit_vocals", "vocals-in-song": "edit_vocals_in_song"}
    if mode not in modes:
        raise typer.BadParameter(f"--mode must be one of {sorted(modes)}, got {mode!r}")
    try:
        s, e = (float(x) for x in span.split(":"))
    except ValueError as err:
        raise typer.BadParameter(f"--span must look like 3.2:5.0, got {span!r}") from err
    pipe = _pipeline(model)
    result = pipe.generate(
        modes[mode],
        lyrics=_lyrics(lyrics),
        vocals=_audio_or_codes(vocals),
        accompaniment=_audio_or_codes(accompaniment),
        span=(s, e),
        seed=seed,
    )
    _write_outputs(out, result, {"task": modes[mode], "span": [s, e], "seed": seed})


@app.command()
def train(
    stage: Annotated[str, typer.Option(help="dslm | tokenizer | vq | renderer")] = "dslm",
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/songcreator"),
    data: Annotated[
        Path | None, typer.Option(help="song tree (ROOT/songs/...); default: procedural songs")
    ] = None,
    config: Annotated[str, typer.Option(help="tiny | paper")] = "tiny",
    steps: int = 300,
    batch_size: int = 16,
    songs: Annotated[int, typer.Option(help="procedural songs when --data is absent")] = 64,
    tokens: Annotated[
        Path | None, typer.Option(help="dslm: a folder of token files from `data tokenize` (real data)")
    ] = None,
    tokenizer: Annotated[
        Path | None, typer.Option(help="dslm/renderer on real data: the BEST-RQ tokenizer directory")
    ] = None,
) -> None:
    """Train one stage. ``dslm`` trains on --tokens (real token files) or, without it, on procedural songs
    with oracle tokens, and saves a full pipeline; ``tokenizer`` trains BEST-RQ and ``vq`` its VQ on the
    audio of --data; ``renderer`` trains the latent-diffusion renderer (procedural songs by default)."""
    import torch

    if config not in ("tiny", "paper"):
        raise typer.BadParameter(f"--config must be tiny or paper, got {config!r}")
    if stage == "dslm" and tokens is not None:
        _train_dslm_tokens(tokens, tokenizer, out, config, steps, batch_size)
        return
    if stage == "renderer":
        _train_renderer(out, data, tokenizer, songs, steps, batch_size, config)
        return
    if stage == "dslm":
        if data is not None:
            raise typer.BadParameter(
                "DSLM training on a real tree reads cached tokens: run `data tokenize`, then pass --tokens DIR"
            )
        from fourfold.data.songs import ProceduralSongs
        from fourfold.songcreator.config import DSLMConfig
        from fourfold.songcreator.demo import KEYS, TEMPOS
        from fourfold.songcreator.dslm import DSLM
        from fourfold.songcreator.lyrics import LyricsFrontend
        from fourfold.songcreator.oracle import ProceduralLabelTokenizer
        from fourfold.songcreator.pipeline import SongCreatorPipeline
        from fourfold.songcreator.training import procedural_token_items, train_dslm

        fe, tok = LyricsFrontend(), ProceduralLabelTokenizer()
        items = procedural_token_items(
            ProceduralSongs(songs, seconds=4.0, seed=0, keys=KEYS, tempos=TEMPOS), fe, tok
        )
        base = DSLMConfig.tiny() if config == "tiny" else DSLMConfig.paper()
        cfg = DSLMConfig(
            **{
                **base.__dict__,
                "codebook_size": tok.codebook_size,
                "lyrics_vocab_size": max(fe.vocab_size, 128),
                "token_rate": 25.0,
            }
        )
        model = DSLM(cfg)
        result = train_dslm(model, items, out / "train", steps=steps, batch_size=batch_size, progress=True)
        SongCreatorPipeline(model, fe, tokenizer=tok).save_pretrained(out / "pipeline")
        typer.echo(f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}; pipeline in {out / 'pipeline'}")
        return
    if stage in ("tokenizer", "vq"):
        if data is None:
            raise typer.BadParameter(f"--stage {stage} needs --data ROOT (a song tree)")
        from fourfold.data.songs import SongStems
        from fourfold.songcreator.bestrq import (
            BestRQ,
            BestRQConfig,
            SemanticVQ,
            SemanticVQConfig,
            bestrq_loss,
        )

        cfg = BestRQConfig.tiny() if config == "tiny" else BestRQConfig.paper()
        reader = SongStems(data, "train", sr=cfg.sample_rate)
        wavs = []
        for sid in reader.songs():
            for clip in reader.clips(sid):
                wavs += [clip["mixture"], clip["vocals"], clip["accompaniment"]]
        if not wavs:
            raise typer.BadParameter(f"{data}: no training songs")
        n = min(len(w) for w in wavs)
        batch = torch.tensor([w[:n] for w in wavs])
        if stage == "tokenizer":
            model = BestRQ(cfg)
            model.fit_normalizer(model.log_mel(batch))
            feats = model.features(batch)
            opt = torch.optim.Adam(model.parameters(), 1e-3)
            g = torch.Generator().manual_seed(0)
            for step in range(steps):
                idx = torch.randint(0, len(feats), (min(batch_size, len(feats)),), generator=g)
                loss = bestrq_loss(model, feats[idx], generator=g)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if step % max(1, steps // 10) == 0:
                    typer.echo(f"step {step} masked CE {loss.item():.3f}")
            model.save_pretrained(out / "bestrq")
        else:
            enc = BestRQ.from_pretrained(out / "bestrq").eval()
            vq = SemanticVQ(
                SemanticVQConfig.tiny(enc.config.dim) if config == "tiny" else SemanticVQConfig.paper()
            )
            with torch.no_grad():
                h = enc.embed_for_tokens(enc.features(batch))
            opt = torch.optim.Adam(vq.parameters(), 1e-3)
            vq.train()
            for step in range(steps):
                _, _, loss = vq(h)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if step % max(1, steps // 10) == 0:
                    typer.echo(f"step {step} VQ loss {loss.item():.4f}")
            vq.save_pretrained(out / "vq")
        typer.echo(f"wrote {out}")
        return
    raise typer.BadParameter(f"--stage must be dslm, tokenizer, vq or renderer, got {stage!r}")


def _train_dslm_tokens(tokens: Path, tokenizer: Path | None, out: Path, config: str, steps: int, batch: int):
    """DSLM on real token files through the shared Trainer; saves ``out/pipeline``."""
    from fourfold.songcreator.config import DSLMConfig
    from fourfold.songcreator.dslm import DSLM
    from fourfold.songcreator.lyrics import LyricsFrontend
    from fourfold.songcreator.pipeline import SongCreatorPipeline
    from fourfold.songcreator.token_data import load_token_items, token_codebook_size
    from fourfold.songcreator.training import train_dslm

    fe = LyricsFrontend()
    base = DSLMConfig.tiny() if config == "tiny" else DSLMConfig.paper(lyrics_vocab_size=512)
    cfg = DSLMConfig(
        **{
            **base.__dict__,
            "codebook_size": token_codebook_size(tokens),
            "lyrics_vocab_size": max(fe.vocab_size, base.lyrics_vocab_size),
        }
    )
    items = load_token_items(tokens, fe, max_frames=cfg.max_stream_tokens)
    model = DSLM(cfg)
    result = train_dslm(model, items, out / "train", steps=steps, batch_size=batch, progress=True)
    tok = None
    if tokenizer is not None:
        from fourfold.songcreator.bestrq import SemanticTokenizer

        tok = SemanticTokenizer.from_pretrained(tokenizer)
        if tok.codebook_size != cfg.codebook_size:
            raise typer.BadParameter(
                f"--tokenizer has {tok.codebook_size} codes, the token files {cfg.codebook_size}"
            )
    SongCreatorPipeline(model, fe, tokenizer=tok).save_pretrained(out / "pipeline")
    typer.echo(
        f"{len(items)} clips; loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}; pipeline in {out / 'pipeline'}"
    )


def _train_renderer(
    out: Path, data: Path | None, tokenizer: Path | None, songs: int, steps: int, batch: int, config: str
):
    """The latent-diffusion renderer: VAE for ``steps // 2`` steps, then the U-Net for ``steps``."""
    import torch

    from fourfold.songcreator.ldm_renderer import (
        LatentDiffusionRenderer,
        LatentDiffusionRendererConfig,
        train_ldm_renderer,
    )

    if data is None:
        from fourfold.data.songs import ProceduralSongs
        from fourfold.songcreator.demo import KEYS, TEMPOS
        from fourfold.songcreator.oracle import ProceduralLabelTokenizer
        from fourfold.songcreator.ship import training_examples

        tok = ProceduralLabelTokenizer()
        examples = training_examples(
            ProceduralSongs(songs, seconds=4.0, seed=0, keys=KEYS, tempos=TEMPOS), tok
        )
        cfg = LatentDiffusionRendererConfig.tiny(tok.codebook_size)
    else:
        if tokenizer is None:
            raise typer.BadParameter("--stage renderer --data ROOT needs --tokenizer DIR (BEST-RQ + VQ)")
        from fourfold.data.songs import SongStems
        from fourfold.songcreator.bestrq import SemanticTokenizer

        tok = SemanticTokenizer.from_pretrained(tokenizer)
        base = (
            LatentDiffusionRendererConfig.paper()
            if config == "paper"
            else LatentDiffusionRendererConfig.tiny()
        )
        cfg = LatentDiffusionRendererConfig(
            **{
                **base.__dict__,
                "codebook_size": tok.codebook_size,
                "sample_rate": tok.sample_rate,
                "token_rate": tok.token_rate,
            }
        )
        reader = SongStems(data, "train", sr=cfg.sample_rate)
        examples = []
        for sid in reader.songs():
            for clip in reader.clips(sid):
                for kind, key in (
                    ("vocals", "vocals"),
                    ("accompaniment", "accompaniment"),
                    ("song", "mixture"),
                ):
                    wav = torch.as_tensor(clip[key], dtype=torch.float32)
                    examples.append((tok.encode(wav, clip["sample_rate"])[0], wav, kind))
        if not examples:
            raise typer.BadParameter(f"{data}: no training songs")
    model = LatentDiffusionRenderer(cfg)
    losses = train_ldm_renderer(
        model, examples, vae_steps=max(1, steps // 2), unet_steps=steps, batch_size=batch, log=typer.echo
    )
    model.save_pretrained(out / "renderer")
    typer.echo(
        f"VAE loss {losses['vae'][0]:.3f} -> {losses['vae'][-1]:.3f}; U-Net loss {losses['unet'][0]:.3f} -> "
        f"{losses['unet'][-1]:.3f}; renderer in {out / 'renderer'}"
    )


@app.command("eval")
def evaluate(
    model: Annotated[
        Path | None, typer.Option(help="pipeline directory (default: the shipped procedural-tiny pipeline)")
    ] = None,
    metrics: Annotated[
        str, typer.Option(help="comma list of: harmony, edit, fad, mcd, secs, per")
    ] = "harmony,edit",
    n: int = 64,
    vggish: Annotated[
        Path | None, typer.Option(help="fad: VGGish weights (our directory or torchvggish .pth)")
    ] = None,
    speaker_encoder: Annotated[
        Path | None, typer.Option(help="secs: speaker encoder (our directory or Resemblyzer pretrained.pt)")
    ] = None,
    phoneme_model: Annotated[
        Path | None, typer.Option(help="per: a local Wav2Vec2ForCTC phoneme model directory")
    ] = None,
    seconds: Annotated[float, typer.Option(help="audio metrics: seconds generated per song")] = 4.0,
    out: Annotated[Path | None, typer.Option(help="write metrics JSON here")] = None,
) -> None:
    """Metrics on procedural songs (oracle tokens): harmony (key agreement, onsets on grid; BR vs None),
    editing checks, and the paper's audio metrics FAD / MCD / SECS / PER from rendered songs."""
    from fourfold.songcreator.demo import _setup, bca_ablation, edit_check

    wanted = [m.strip() for m in metrics.split(",") if m.strip()]
    known = {"harmony", "edit", "fad", "mcd", "secs", "per"}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise typer.BadParameter(
            f"unknown metric(s) {unknown}; available: {sorted(known)} (MOS needs human raters)"
        )
    if "secs" in wanted and speaker_encoder is None:
        raise typer.BadParameter("--metrics secs needs --speaker-encoder PATH")
    if "per" in wanted and phoneme_model is None:
        raise typer.BadParameter("--metrics per needs --phoneme-model DIR")
    pipe = _pipeline(model)
    result = {}
    if {"harmony", "edit"} & set(wanted):
        _, _, _, items = _setup(64)
        if "harmony" in wanted:
            abl = bca_ablation(pipe.dslm, items, n)
            result["harmony"] = {
                k: {kk: vv for kk, vv in v.items() if kk != "samples"} for k, v in abl.items()
            }
        if "edit" in wanted:
            result["edit"] = edit_check(pipe.dslm, items, min(n, 16))
    audio = {"fad", "mcd", "secs", "per"} & set(wanted)
    if audio:
        from fourfold.songcreator.evaluate import audio_metrics

        songs, _, tok, _ = _setup(max(2, min(n, 16)), seed=1, prompts=False)
        result.update(
            audio_metrics(
                pipe,
                songs,
                tok,
                audio,
                n=len(songs),
                vggish=vggish,
                speaker_encoder=speaker_encoder,
                phoneme_model=phoneme_model,
                seconds=seconds,
            )
        )
    text = json.dumps(result, indent=1)
    if out is not None:
        from fourfold.nn.modeling import atomic_write_text

        atomic_write_text(out, text + "\n")
    typer.echo(text)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="root of the song tree to write")],
    n: int = 16,
    seconds: float = 4.0,
    seed: int = 0,
    sr: int = 16000,
) -> None:
    """Write procedural songs in the real layout (ROOT/songs/<id>/..., ROOT/splits/train.txt)."""
    from fourfold.data.songs import ProceduralSongs

    ProceduralSongs(n, seconds=seconds, sr=sr, seed=seed).write(out)
    typer.echo(f"wrote {n} songs to {out}")


@data_app.command("tokenize")
def data_tokenize(
    root: Annotated[Path, typer.Option(help="song tree")],
    tokenizer: Annotated[Path, typer.Option(help="directory with bestrq/ and vq/")],
    out: Annotated[Path, typer.Option(help="where the token files go")],
    split: str = "train",
) -> None:
    """Encode every packed clip's mixture and stems into codes (one safetensors file per clip, atomic)."""
    import torch

    from fourfold.data.songs import SongStems
    from fourfold.songcreator.bestrq import SemanticTokenizer
    from fourfold.songcreator.token_data import write_token_file

    tok = SemanticTokenizer.from_pretrained(tokenizer)
    reader = SongStems(root, split, sr=tok.sample_rate)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for sid in reader.songs():
        for clip in reader.clips(sid):
            codes = {
                k: tok.encode(torch.as_tensor(clip[k]), clip["sample_rate"])[0]
                for k in ("mixture", "vocals", "accompaniment")
            }
            target = out / f"{clip['id'].replace('/', '_')}.safetensors"
            write_token_file(
                target, codes, clip_id=clip["id"], lyrics=clip["lyrics"], codebook_size=tok.codebook_size
            )
            count += 1
    typer.echo(f"wrote {count} token files to {out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("demo_out/songcreator"),
    full: Annotated[
        bool, typer.Option(help="train from scratch at demo scale instead of the quick run")
    ] = False,
) -> None:
    """Run the SongCreator demo and write WAVs, PNGs and metrics.json."""
    from fourfold.nn.modeling import atomic_write_text

    result = run_demo(out, quick=not full)
    atomic_write_text(
        out / "metrics.json",
        json.dumps({"songcreator": result.metrics, "checks": result.checks}, indent=1, default=float) + "\n",
    )
    typer.echo(result.summary)


def run_demo(out_dir: Path, quick: bool = True):
    """The entry point ``fourfold demo`` calls: see :mod:`fourfold.songcreator.demo`."""
    from fourfold.songcreator.demo import run_demo as _run

    return _run(Path(out_dir), quick=quick)
