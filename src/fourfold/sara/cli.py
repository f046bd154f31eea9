"""``fourfold sara <verb>``: finetune, generate, merge, inspect, eval, demo; and ``run_demo`` for ``fourfold demo``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

# a small Stable Diffusion trained on coloured digits (fourfold.sara.sd_digits), so every command runs on a
# fresh clone; kept as a path here so that `fourfold --help` does not import torch
SHIPPED_BASE = Path(__file__).parent / "assets" / "digits-sd-tiny"

app = typer.Typer(name="sara", help="SaRA: sparse low-rank fine-tuning of diffusion models (arXiv 2409.06633).",
                  no_args_is_help=True)  # fmt: skip


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _adapter_spec(spec: str) -> tuple[Path, float]:
    """``DIR`` or ``DIR:alpha`` → (dir, alpha)."""
    path, sep, alpha = spec.rpartition(":")
    if sep and path and not Path(spec).exists():
        try:
            return Path(path), float(alpha)
        except ValueError as err:
            raise typer.BadParameter(f"adapter {spec!r}: alpha after ':' must be a number") from err
    return Path(spec), 1.0


@app.command()
def finetune(
    data: Annotated[Path, typer.Option(help="image folder with metadata.jsonl or .txt captions")],
    out: Annotated[Path, typer.Option(help="output directory")],
    threshold: Annotated[float | None, typer.Option(help="θ: train entries with |w| < θ")] = None,
    fraction: Annotated[float | None, typer.Option(help="or: train this share of all entries")] = None,
    lambda_rank: Annotated[float, typer.Option(help="λ of the nuclear-norm loss")] = 5e-3,
    progressive_at: Annotated[float, typer.Option(help="PPA at this share of the run; 0 disables")] = 0.5,
    rank_min_dim: Annotated[int, typer.Option(help="nuclear norm on matrices with min side > this")] = 64,
    steps: Annotated[int, typer.Option()] = 5000,
    batch_size: Annotated[int, typer.Option()] = 4,
    grad_accum: Annotated[int, typer.Option()] = 1,
    lr: Annotated[str, typer.Option(help="'auto' (Eq. 12 for SaRA, 1e-4 otherwise) or a number")] = "auto",
    prefix: Annotated[str, typer.Option(help='caption prefix, e.g. "<name> style, "')] = "",
    resolution: Annotated[int | None, typer.Option()] = None,
    instance_prompt: Annotated[
        str | None, typer.Option(help="DreamBooth: one prompt for every image")
    ] = None,
    class_data: Annotated[
        Path | None, typer.Option(help="DreamBooth prior preservation: class image folder")
    ] = None,
    class_prompt: Annotated[str | None, typer.Option(help="prompt of the class images")] = None,
    prior_loss_weight: Annotated[float, typer.Option(help="weight of the class (prior) loss")] = 1.0,
    method: Annotated[str, typer.Option(help="sara | lora | full")] = "sara",
    mixed_precision: Annotated[str, typer.Option(help="no | bf16 | fp16")] = "no",
    checkpoint_every: Annotated[int, typer.Option()] = 500,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="continue from OUT's newest checkpoint")] = False,
    progress: Annotated[bool, typer.Option()] = True,
    model: Annotated[
        Path,
        typer.Option(help="diffusers SD1.x/2.x, SDXL or SD3 model directory (local); default: shipped base"),
    ] = SHIPPED_BASE,
) -> None:
    """Fine-tune a text-to-image UNet on a style folder; writes OUT/adapter (SaRA) and checkpoints."""
    _offline()
    from fourfold.sara.train import SaraTrainConfig
    from fourfold.sara.train import finetune as run_finetune

    if threshold is not None and fraction is not None:
        raise typer.BadParameter("give --threshold or --fraction, not both")
    if threshold is None and fraction is None:
        threshold = 2e-3  # the paper's 50M budget on SD1.5
    try:
        cfg = SaraTrainConfig(
            model_dir=str(model), data_dir=str(data), output_dir=str(out), method=method,
            threshold=threshold if fraction is None else None, fraction=fraction, lambda_rank=lambda_rank,
            progressive_at=progressive_at or None, rank_min_dim=rank_min_dim, steps=steps, batch_size=batch_size,
            grad_accum=grad_accum, lr=None if lr == "auto" else float(lr), prefix=prefix, resolution=resolution,
            instance_prompt=instance_prompt, class_data_dir=None if class_data is None else str(class_data),
            class_prompt=class_prompt, prior_loss_weight=prior_loss_weight,
            mixed_precision=mixed_precision, checkpoint_every=checkpoint_every, seed=seed,
        )  # fmt: skip
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    summary = run_finetune(cfg, resume=resume, progress=progress)
    typer.echo(json.dumps(summary, indent=2))


def _apply_adapters(unet, adapters: list[str]) -> None:
    from fourfold import sara

    specs = [_adapter_spec(a) for a in adapters]
    if len(specs) == 1:
        handle = sara.load(unet, specs[0][0])
        if specs[0][1] != 1.0:
            handle.scale(specs[0][1])
        handle.merge_and_unload()
    else:
        deltas = [sara.SaraDelta.from_pretrained(p) for p, _ in specs]
        sara.combine(deltas, [a for _, a in specs]).apply_to(unet)


@app.command()
def generate(
    prompts: Annotated[Path, typer.Option(help="text file, one prompt per line")],
    out: Annotated[Path, typer.Option(help="output directory for PNGs")],
    adapter: Annotated[
        list[str] | None, typer.Option(help="SaRA adapter DIR or DIR:alpha; repeat to combine")
    ] = None,
    prefix: Annotated[str, typer.Option(help="prepended to every prompt")] = "",
    steps: Annotated[int, typer.Option(help="sampling steps")] = 25,
    guidance: Annotated[float, typer.Option(help="classifier-free guidance scale")] = 7.5,
    seed: Annotated[int, typer.Option(help="image i uses seed + i")] = 0,
    height: Annotated[int | None, typer.Option()] = None,
    width: Annotated[int | None, typer.Option()] = None,
    model: Annotated[
        Path, typer.Option(help="diffusers SD1.x/2.x, SDXL or SD3 model directory; default: shipped base")
    ] = SHIPPED_BASE,
) -> None:
    """Generate one PNG per prompt (fixed seeds) with the base model plus SaRA adapters."""
    _offline()
    import torch

    from fourfold.sara.pipelines import denoiser_of, load_pipeline

    lines = [ln.strip() for ln in prompts.read_text().splitlines() if ln.strip()]
    if not lines:
        raise typer.BadParameter(f"{prompts}: no prompts")
    pipe, _ = load_pipeline(model)  # SD1.x/2.x, SDXL or SD3
    if adapter:
        _apply_adapters(denoiser_of(pipe), adapter)
    out.mkdir(parents=True, exist_ok=True)
    for i, prompt in enumerate(lines):
        gen = torch.Generator().manual_seed(seed + i)
        image = pipe(prefix + prompt, num_inference_steps=steps, guidance_scale=guidance, generator=gen,
                     height=height, width=width).images[0]  # fmt: skip
        image.save(out / f"{i:04d}.png")
    typer.echo(f"wrote {len(lines)} images to {out}")


@app.command()
def merge(
    adapter: Annotated[list[str], typer.Option(help="SaRA adapter DIR or DIR:alpha; repeat to combine")],
    out: Annotated[Path, typer.Option(help="where to write the merged full diffusers model")],
    model: Annotated[
        Path, typer.Option(help="diffusers model directory; default: shipped base")
    ] = SHIPPED_BASE,
) -> None:
    """Bake adapters into the UNet and save a complete diffusers model directory."""
    _offline()
    from fourfold.sara.pipelines import denoiser_of, load_pipeline

    pipe, _ = load_pipeline(model)
    _apply_adapters(denoiser_of(pipe), adapter)
    pipe.save_pretrained(out)
    typer.echo(f"merged model written to {out}")


@app.command()
def inspect(
    adapter: Annotated[Path, typer.Argument(help="SaRA adapter directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show an adapter's θ, config and per-tensor support sizes."""
    from fourfold.sara.io import read_adapter

    tensors, meta = read_adapter(adapter)
    rows = [{"name": n, "shape": meta["fingerprint"][n]["shape"], "support": int(i.numel()),
             "mean_abs_value": float(v.abs().mean()) if v.numel() else 0.0} for n, (i, v) in tensors.items()]  # fmt: skip
    info = {"threshold": meta["threshold"], "config": meta["config"].to_dict(), "tensors": len(rows),
            "support": sum(r["support"] for r in rows),
            "file_bytes": (adapter / "adapter_model.safetensors").stat().st_size, "per_tensor": rows}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"θ = {info['threshold']:.4g}; {info['tensors']} tensors; support {info['support']:,} entries; "
               f"file {info['file_bytes']:,} bytes")  # fmt: skip
    for r in sorted(rows, key=lambda r: -r["support"])[:20]:
        typer.echo(f"  {r['name']:<70} {tuple(r['shape'])!s:<20} {r['support']:>10,}")


@app.command("eval")
def evaluate(
    rows: Annotated[
        Path | None, typer.Option(help='JSON {"name": {"fid": f, "clip": c}} of one group → VLHI')
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="generated images (sorted names align with --prompts)")
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option(help="prompt file, one per line, for the CLIP score")
    ] = None,
    prefix: Annotated[str, typer.Option(help="prepended to each prompt for the CLIP score")] = "",
    clip: Annotated[
        Path | None, typer.Option(help="local CLIP model directory (ViT-L/14 in the paper)")
    ] = None,
    features: Annotated[
        Path | None, typer.Option(help=".npy features of generated images (for FD/FID)")
    ] = None,
    ref_features: Annotated[Path | None, typer.Option(help=".npy features of the reference set")] = None,
    inception: Annotated[
        Path | None,
        typer.Option(help="FID InceptionV3 weights (torch-fidelity .pth or .safetensors) → FID of --images"),
    ] = None,
    ref_images: Annotated[
        Path | None, typer.Option(help="reference image folder for FID (paper: the training set)")
    ] = None,
) -> None:
    """FID (InceptionV3 from a local file) and CLIP score of an image folder, FD between feature files, and
    VLHI (Eq. 8) over a group of rows."""
    _offline()
    if rows is None and images is None and features is None:
        raise typer.BadParameter("give --rows, --images/--prompts/--clip, or --features/--ref-features")
    out: dict = {}
    if inception is not None:
        from fourfold.metrics.frechet import frechet_distance_from_features
        from fourfold.sara.evaluate import list_images
        from fourfold.sara.inception import inception_features, load_fid_inception

        if images is None or ref_images is None:
            raise typer.BadParameter("--inception needs --images and --ref-images")
        net = load_fid_inception(inception)
        out["fid"] = frechet_distance_from_features(
            inception_features(net, list_images(images)), inception_features(net, list_images(ref_images))
        )
    if images is not None and (prompts is not None or clip is not None or inception is None):
        from fourfold.sara.evaluate import clip_score, list_images

        if prompts is None or clip is None:
            raise typer.BadParameter("--images needs --prompts and --clip")
        texts = [prefix + ln.strip() for ln in prompts.read_text().splitlines() if ln.strip()]
        out["clip_score"] = clip_score(list_images(images), texts, clip)
    if features is not None:
        from fourfold.sara.evaluate import feature_fd

        if ref_features is None:
            raise typer.BadParameter("--features needs --ref-features")
        out["fd"] = feature_fd(features, ref_features)
    if rows is not None:
        from fourfold.metrics.vlhi import vlhi_scores

        data = json.loads(rows.read_text())
        names = list(data)
        scores = vlhi_scores([data[n]["fid"] for n in names], [data[n]["clip"] for n in names])
        out["vlhi"] = dict(zip(names, scores, strict=True))
    typer.echo(json.dumps(out, indent=2))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/sara_demo"),
    quick: Annotated[
        bool, typer.Option(help="150-step runs, 10 samples per digit (a few CPU minutes)")
    ] = False,
) -> None:
    """Tiny digits demo: SaRA vs LoRA vs full fine-tuning plus ablations."""
    result = run_demo(out, quick=quick)
    typer.echo(result.summary)


def run_demo(out_dir: Path, quick: bool = True):
    """Entry point for ``fourfold demo``; see :mod:`fourfold.sara.demo`."""
    _offline()
    from fourfold.sara.demo import DemoConfig, run

    return run(Path(out_dir), DemoConfig.quick() if quick else DemoConfig.full())
