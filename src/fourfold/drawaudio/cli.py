"""``fourfold drawaudio``: generate | train | eval | data | demo (heavy imports stay inside the commands)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="drawaudio",
    help="Draw an Audio: Foley for silent videos with drawn masks (MAM) and loudness curves (TLM).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EVAL_METRICS = ("onset", "loudness", "fd", "fad", "kl", "is", "csav")


@app.command()
def generate(
    video: Annotated[Path, typer.Option(help="input video file")],
    out: Annotated[Path, typer.Option(help="output wav")],
    model: Annotated[
        Path | None,
        typer.Option(
            help="adapter checkpoint directory (drawaudio_config.json + adapter.safetensors); "
            "default: the shipped tiny adapter"
        ),
    ] = None,
    base: Annotated[
        Path | None, typer.Option(help="base directory (default: the one recorded in the checkpoint)")
    ] = None,
    prompt: str = "",
    phrase: Annotated[
        str | None, typer.Option(help="keyphrase for --detect (default: from the prompt)")
    ] = None,
    mask: Annotated[
        str | None, typer.Option(help="mask.json, a mask image, or x0,y0,x1,y1 (normalised box)")
    ] = None,
    loudness: Annotated[
        str | None, typer.Option(help="curve.json, or a reference audio file to copy loudness from")
    ] = None,
    detect: Annotated[bool, typer.Option(help="mask from the colour detector and the keyphrase")] = False,
    steps: int | None = None,
    seed: int = 0,
    cfg: Annotated[str | None, typer.Option(help="dual | joint")] = None,
    guidance_video: float | None = None,
    guidance_text: float | None = None,
    negative_prompt: str | None = None,
    mux: Annotated[
        Path | None, typer.Option(help="also write an mp4 with the input video and the new audio")
    ] = None,
) -> None:
    """Generate a soundtrack for VIDEO."""
    from fourfold.drawaudio.demo import ASSET_ADAPTER
    from fourfold.drawaudio.masks import ColorDetector, MaskInput
    from fourfold.drawaudio.pipeline import DrawAudioPipeline
    from fourfold.drawaudio.tlm import curve_from_audio

    if model is None:
        if not (ASSET_ADAPTER / "adapter.safetensors").is_file():
            raise typer.BadParameter("no --model given and the shipped tiny adapter is missing")
        model = ASSET_ADAPTER
    pipe = DrawAudioPipeline.from_pretrained(model, base, detector=ColorDetector() if detect else None)
    m = mask
    if mask is not None and not Path(mask).exists() and mask.count(",") == 3:
        m = MaskInput.box([float(v) for v in mask.split(",")])
    curve = loudness
    if loudness is not None and Path(loudness).suffix.lower() != ".json":
        curve = curve_from_audio(Path(loudness), pipe.cfg)
    result = pipe(video, prompt, mask=m, loudness=curve, negative_prompt=negative_prompt, num_inference_steps=steps,
                  cfg=cfg, guidance_video=guidance_video, guidance_text=guidance_text, seed=seed, phrase=phrase,
                  detect=detect)  # fmt: skip
    paths = result.save(out, mux_video=mux)
    typer.echo(json.dumps({k: str(v) for k, v in paths.items()}))


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="output adapter directory")],
    data: Annotated[str, typer.Option(help="procedural[:N] or vggsound:ROOT")] = "procedural:1200",
    config: Annotated[Path | None, typer.Option(help="DrawAudioConfig JSON (default: tiny)")] = None,
    base: Annotated[
        Path | None,
        typer.Option(
            help="base directory (overrides the config's base.path; with --stage base: reuse its vae/)"
        ),
    ] = None,
    steps: int | None = None,
    seconds: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    stage: Annotated[
        str, typer.Option(help="adapter (the paper's stage) | base (tiny base pretraining)")
    ] = "adapter",
) -> None:
    """Train the adapter (or, with --stage base, the tiny text-to-audio base). Multi-GPU: accelerate launch."""
    from fourfold.drawaudio.config import DrawAudioConfig

    cfg = DrawAudioConfig.load(config) if config else DrawAudioConfig.tiny()
    if stage == "base":
        from fourfold.drawaudio.train import pretrain_tiny_base

        n = int(data.split(":")[1]) if data.startswith("procedural:") else 300
        info = pretrain_tiny_base(
            out,
            cfg,
            n_clips=n,
            vae_steps=0 if base else 600,
            unet_steps=steps or 600,
            progress=True,
            vae_from=base,
        )
        typer.echo(json.dumps(info))
        return
    if stage != "adapter":
        raise typer.BadParameter(f"--stage must be 'adapter' or 'base', got {stage!r}")
    from fourfold.drawaudio.base import load_base
    from fourfold.drawaudio.data import BounceViews, SampleViews
    from fourfold.drawaudio.demo import ASSET_BASE
    from fourfold.drawaudio.model import DrawAudioModel
    from fourfold.drawaudio.train import train_adapter

    if base is not None:
        cfg.base.path = str(base)
    if not cfg.base.path:
        if cfg.video.encoder != "tiny":
            raise typer.BadParameter("the config has no base.path; pass --base DIR")
        cfg.base.path = str(ASSET_BASE)
    b = load_base(cfg.base.path, cfg)
    if data.startswith("procedural"):
        n = int(data.split(":")[1]) if ":" in data else 1200
        dataset = BounceViews(b, cfg, n, seed=cfg.train.seed)
    elif data.startswith("vggsound:"):
        from fourfold.data.vggsound import VGGSoundClips

        clips = VGGSoundClips(data.split(":", 1)[1], split="train", duration=cfg.duration)
        dataset = SampleViews(b, cfg, (clips[i] for i in range(len(clips))))
    else:
        raise typer.BadParameter(f"--data must be procedural[:N] or vggsound:ROOT, got {data!r}")
    model = DrawAudioModel(cfg, b)
    result = train_adapter(
        model, dataset, out.parent / f".{out.name}-run", steps=steps, seconds=seconds, progress=True
    )
    model.save_adapter(out)
    typer.echo(json.dumps({"steps": result.step, "final_loss": result.losses[-1], "adapter": str(out)}))


@app.command("eval")
def evaluate(
    gen: Annotated[Path, typer.Option(help="folder of generated wavs")],
    ref: Annotated[Path, typer.Option(help="folder of reference wavs (paired by file name)")],
    out: Annotated[Path, typer.Option(help="metrics JSON")] = Path("metrics.json"),
    metrics: Annotated[
        str,
        typer.Option(
            help="comma list from: onset, loudness, fd, kl, is (need PANNs), fad (needs VGGish), "
            "csav (needs --av-embedder and the videos)"
        ),
    ] = "onset,loudness",
    embedder: Annotated[
        list[Path] | None,
        typer.Option(help="PANNs CNN14 or VGGish weights (.safetensors/.pth/folder); repeat to give both"),
    ] = None,
    av_embedder: Annotated[
        Path | None,
        typer.Option(help="audio-visual embedder folder for csav (e.g. the shipped assets/tiny_cavp)"),
    ] = None,
    video: Annotated[
        Path | None, typer.Option(help="folder of <name>.mp4 videos for csav (default: the --ref folder)")
    ] = None,
) -> None:
    """Paired metrics over two folders -> METRICS JSON (written atomically)."""
    from fourfold.audio.io import load_audio
    from fourfold.metrics.audio import distribution_metrics, loudness_metrics, onset_metrics
    from fourfold.nn.modeling import atomic_write_text

    wanted = [m.strip() for m in metrics.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in EVAL_METRICS]
    if unknown:
        raise typer.BadParameter(f"unsupported metrics {unknown}: choose from {list(EVAL_METRICS)}")
    if "csav" in wanted and av_embedder is None:
        raise typer.BadParameter("metric csav needs --av-embedder DIR (an audio-visual embedder folder)")
    nets = {}
    if embedder:
        from fourfold.audio.embedders import PANNsCnn14, load_embedder

        for path in embedder:
            net = load_embedder(path)
            nets["panns" if isinstance(net, PANNsCnn14) else "vggish"] = net
    need = {"fd": "panns", "kl": "panns", "is": "panns", "fad": "vggish"}
    lacking = sorted({need[m] for m in wanted if m in need and need[m] not in nets})
    if lacking:
        names = {"panns": "PANNs CNN14 (FD, KL, IS)", "vggish": "VGGish (FAD)"}
        raise typer.BadParameter(
            f"metrics {[m for m in wanted if need.get(m) in lacking]} need --embedder weights of "
            + " and ".join(names[k] for k in lacking)
        )
    gens = {p.stem: p for p in sorted(gen.glob("*.wav"))}
    refs = {p.stem: p for p in sorted(ref.glob("*.wav"))}
    common = sorted(set(gens) & set(refs))
    if not common:
        raise typer.BadParameter(f"no wav names in common between {gen} and {ref}")
    unpaired = sorted(set(gens) ^ set(refs))
    sr = 16000
    g = [load_audio(gens[k], sr=sr)[0] for k in common]
    r = [load_audio(refs[k], sr=sr)[0] for k in common]
    result: dict = {"clips": len(common), "unpaired": unpaired}
    if "loudness" in wanted:
        result.update(loudness_metrics(g, r, sr))
    if "onset" in wanted:
        result.update(onset_metrics(g, sr, ref_wavs=r))
    dist = [m for m in wanted if m in need]
    if dist:
        import torch

        with torch.no_grad():
            result.update(distribution_metrics(g, r, sr, dist, nets.get("panns"), nets.get("vggish")))
    if "csav" in wanted:
        from fourfold.audio.io import read_video
        from fourfold.metrics.csav import csav, load_av_embedder

        net = load_av_embedder(av_embedder)
        vdir = video or ref
        missing = [f"{k}.mp4" for k in common if not (vdir / f"{k}.mp4").is_file()]
        if missing:
            raise typer.BadParameter(f"csav: no video for {missing[:10]} in {vdir} (pass --video DIR)")
        videos = [read_video(vdir / f"{k}.mp4", with_audio=False)[0] for k in common]
        result.update(csav(net, g, sr, videos))
    atomic_write_text(out, json.dumps(result, indent=2))
    typer.echo(json.dumps(result))


@app.command()
def data(
    out: Annotated[Path, typer.Option(help="output folder")],
    procedural: Annotated[int, typer.Option(help="write N bouncing clips (mp4, wav, stems, json)")] = 0,
    seed: int = 0,
    detect: Annotated[
        Path | None, typer.Option(help="folder of mp4s: write masks/<stem>.json from the colour detector")
    ] = None,
    phrase: Annotated[str, typer.Option(help="keyphrase for --detect")] = "red ball",
    hum: Annotated[
        bool,
        typer.Option(
            help="add the off-screen hum with its random level envelope (the model's training data)"
        ),
    ] = True,
) -> None:
    """Write procedural clips, or detect masks for a folder of videos."""
    from fourfold.data.bouncing import BouncingConfig, write_clip
    from fourfold.drawaudio.data import DEFAULT_HUM, procedural_clip
    from fourfold.nn.modeling import atomic_write_text

    if procedural <= 0 and detect is None:
        raise typer.BadParameter("give --procedural N and/or --detect FOLDER")
    for i in range(procedural):
        clip = procedural_clip(seed + i, BouncingConfig(), DEFAULT_HUM if hum else None)
        write_clip(clip, out, f"bounce_{seed + i:06d}")
        if "offscreen_hum" in clip.meta:  # the envelope is ground truth too (BounceFoley's JSON has no field)
            atomic_write_text(out / f"bounce_{seed + i:06d}_hum.json", json.dumps(clip.meta["offscreen_hum"]))
    if detect is not None:
        from fourfold.audio.io import read_video
        from fourfold.drawaudio.masks import ColorDetector

        det = ColorDetector()
        for path in sorted(detect.glob("*.mp4")):
            frames, fps, _, _ = read_video(path, with_audio=False)
            boxes = det.detect(frames, [phrase])
            keyframes = [{"t": i / fps, "boxes": b} for i, b in enumerate(boxes) if b]
            (out / "masks").mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                out / "masks" / f"{path.stem}.json", json.dumps({"frames": keyframes, "phrase": phrase})
            )
    typer.echo(f"wrote {procedural} clips{' and masks' if detect else ''} to {out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("demo_out/drawaudio"),
    full: Annotated[
        bool, typer.Option(help="the longer run (about 30 min) instead of the quick one")
    ] = False,
) -> None:
    """Train the tiny model on procedural clips on CPU and write metrics, plots and audio."""
    result = run_demo(out, quick=not full)
    typer.echo(json.dumps({"checks": result.checks, "seconds": result.seconds}, indent=2))


def run_demo(out_dir: Path, quick: bool = True):
    """Entry point for ``fourfold demo`` (see :mod:`fourfold.drawaudio.demo`)."""
    from fourfold.drawaudio.demo import run_demo as _run

    return _run(Path(out_dir), quick=quick)
