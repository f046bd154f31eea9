"""``fourfold intra …``: train, eval, infer, demo, data. Heavy imports live inside the commands."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(name="intra", help="INTRA affordance grounding (arXiv 2409.06210).", no_args_is_help=True)
data_app = typer.Typer(name="data", help="Make datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _parse_data(spec: str) -> tuple[str, Path]:
    kind, _, root = spec.partition(":")
    if kind not in ("agd20k", "folder", "masks") or not root:
        raise typer.BadParameter(f"--data must be agd20k:ROOT, folder:ROOT or masks:ROOT, got {spec!r}")
    return kind, Path(root)


@app.command()
def train(
    data: Annotated[
        str, typer.Option(help="agd20k:ROOT (with --split) or folder:ROOT (<affordance>/[<object>/]*.jpg)")
    ],
    image_encoder: Annotated[Path, typer.Option(help="local Dinov2Model directory")],
    text_encoder: Annotated[Path, typer.Option(help="local BERT-style model + tokenizer directory")],
    out: Annotated[Path, typer.Option(help="run directory; the model is written to OUT/final")],
    split: Annotated[str, typer.Option(help="AGD20K split: Seen or Unseen")] = "Seen",
    relationship: Annotated[
        str, typer.Option(help="'default' (shipped AGD20K map), 'identity' or a CSV/JSON file")
    ] = "default",
    synonyms: Annotated[str, typer.Option(help="'default' (paper Tab. S2) or a JSON file")] = "default",
    size: Annotated[str, typer.Option(help="model size preset: paper or tiny")] = "paper",
    steps: Annotated[int, typer.Option(help="optimizer steps")] = 1000,
    batch_size: Annotated[int, typer.Option(help="images per step (paper 256)")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate (paper 2e-4)")] = 2e-4,
    seed: int = 0,
    cache_features: Annotated[
        bool, typer.Option(help="precompute frozen features of two augmented views")
    ] = True,
    seeds: Annotated[
        int, typer.Option(help="train this many runs (seeds SEED..SEED+N-1) into OUT/seed-<s>/final")
    ] = 1,
    val_dir: Annotated[
        str | None,
        typer.Option(
            help="GT folder under ROOT/SPLIT used as a validation split: keep its best step in OUT/best"
        ),
    ] = None,
    select_on_test: Annotated[
        bool,
        typer.Option(
            "--select-on-test",
            help="REPRODUCTION ONLY: keep the step with the best TEST mKLD (LOCATE's train.py practice); "
            "its metrics say selection=test",
        ),
    ] = False,
    eval_every: Annotated[int, typer.Option(help="steps between selection evaluations")] = 500,
) -> None:
    """Train INTRA on exocentric images (no pixel labels). Reports the final step unless a selection is asked."""
    from fourfold.data.agd20k import affordances_for, read_exocentric, read_testset, read_train
    from fourfold.intra.config import IntraConfig
    from fourfold.intra.evaluation import best_step_eval_fn, seed_run_dir
    from fourfold.intra.model import IntraModel
    from fourfold.intra.relations import RelationshipMap, SynonymTable
    from fourfold.intra.train import IntraTrainConfig, train_intra

    kind, root = _parse_data(data)
    if kind == "masks":
        raise typer.BadParameter("masks:ROOT is a test-set layout; train on agd20k:ROOT or folder:ROOT")
    if seeds < 1:
        raise typer.BadParameter(f"--seeds must be >= 1, got {seeds}")
    if (val_dir is not None or select_on_test) and kind != "agd20k":
        raise typer.BadParameter(
            "--val-dir / --select-on-test need --data agd20k:ROOT (a GT folder to score)"
        )
    if val_dir is not None and select_on_test:
        raise typer.BadParameter("pass either --val-dir (validation split) or --select-on-test, not both")
    if val_dir == "testset":
        raise typer.BadParameter(
            "--val-dir testset is the test set; selection must use a separate validation folder "
            "(--select-on-test exists only to reproduce LOCATE's practice)"
        )
    if kind == "agd20k":
        items, labels = read_train(root, split), list(affordances_for(split))
    else:
        items = read_exocentric(root)
        labels = sorted({it.affordance for it in items})
    rel = RelationshipMap.default(labels) if relationship == "default" else None
    if relationship == "identity":
        rel = RelationshipMap.identity(labels)
    elif rel is None:
        rel = RelationshipMap.load(relationship, labels)
    syn = SynonymTable.default(labels) if synonyms == "default" else SynonymTable.load(synonyms, labels)
    presets = {"paper": IntraConfig.paper, "tiny": IntraConfig.tiny}
    if size not in presets:
        raise typer.BadParameter(f"--size must be one of {sorted(presets)}")
    cfg = presets[size](image_encoder=str(image_encoder), text_encoder=str(text_encoder))
    selection, sel_items = None, None
    if val_dir is not None or select_on_test:
        selection = "test" if select_on_test else "validation"
        sel_items = read_testset(root, split, "testset" if select_on_test else val_dir, labels=labels)
    for s in range(seed, seed + seeds):
        run = seed_run_dir(out, s) if seeds > 1 else out
        eval_fn = best_step_eval_fn(sel_items, run, selection) if selection else None
        _seed_init(s)
        tcfg = IntraTrainConfig(
            output_dir=str(run), max_steps=steps, batch_size=batch_size, learning_rate=lr, seed=s,
            cache_image_features=cache_features,
        )  # fmt: skip
        result = train_intra(
            IntraModel(cfg), items, labels, rel, syn, tcfg, eval_fn=eval_fn, eval_every=eval_every
        )
        best = f"; best {selection}-selected step in {run / 'best'}" if selection else ""
        typer.echo(
            f"seed {s}: trained {result.step} steps; final loss {result.losses[-1]:.4f}; "
            f"model in {run / 'final'}{best}"
        )


def _seed_init(seed: int) -> None:
    import torch

    torch.manual_seed(seed)  # the trainable heads are initialised before the Trainer seeds its loop


@app.command("eval")
def eval_(
    ckpt: Annotated[
        Path, typer.Option(help="run directory (OUT/final) written by train; with --seeds the train OUT")
    ],
    data: Annotated[
        str,
        typer.Option(
            help="agd20k:ROOT, or masks:ROOT (IIT-AFF/CAD/UMD: images/, masks/<aff>/, label_map.json)"
        ),
    ],
    split: Annotated[str, typer.Option(help="Seen or Unseen")] = "Seen",
    testset_dir: Annotated[
        str, typer.Option(help="test folder under ROOT/SPLIT (extended sets, Tab. S10)")
    ] = "testset",
    seeds: Annotated[
        int, typer.Option(help="score CKPT/seed-<s>/final for s = SEED..SEED+N-1; mean ± std (sample std)")
    ] = 1,
    seed: Annotated[int, typer.Option(help="first seed with --seeds")] = 0,
    image_encoder: Annotated[Path | None, typer.Option(help="override the saved image encoder path")] = None,
    text_encoder: Annotated[Path | None, typer.Option(help="override the saved text encoder path")] = None,
    out: Annotated[Path | None, typer.Option(help="metrics JSON path (default CKPT/metrics.json)")] = None,
) -> None:
    """Score a checkpoint on an AGD20K-layout test set: mKLD, mSIM, mNSS as LOCATE computes them."""
    from fourfold.data.agd20k import label_text, read_mask_testset, read_testset
    from fourfold.intra.evaluation import mean_std_over_seeds, run_selection, seed_run_dir
    from fourfold.intra.pipeline import IntraGrounder, evaluate_items
    from fourfold.nn import atomic_write_text

    kind, root = _parse_data(data)
    if kind == "folder":
        raise typer.BadParameter("eval needs GT: --data agd20k:ROOT or masks:ROOT")
    if seeds < 1:
        raise typer.BadParameter(f"--seeds must be >= 1, got {seeds}")
    runs = (
        [Path(ckpt)] if seeds == 1 else [seed_run_dir(ckpt, s) / "final" for s in range(seed, seed + seeds)]
    )
    missing = [str(r) for r in runs if not (r / "config.json").is_file()]
    if missing:
        raise typer.BadParameter(f"no trained run at {', '.join(missing)} (train with --seeds {seeds} first)")
    per_seed = []
    for run in runs:
        g = IntraGrounder.from_pretrained(run, image_encoder=image_encoder, text_encoder=text_encoder)
        if kind == "masks":
            items = read_mask_testset(root)
        else:
            items = read_testset(root, split, testset_dir, labels=g.model.labels)
        scores = evaluate_items(
            items, lambda ims, affs, g=g: g.ground_batch(ims, [label_text(a) for a in affs])
        )
        per_seed.append({**scores.as_dict(), **run_selection(run), "run": str(run)})
    where = {"data": str(root)} if kind == "masks" else {"split": split, "testset_dir": testset_dir}
    common = {**where, **run_selection(runs[0])}
    if seeds == 1:
        result = {**per_seed[0], **common}
        result.pop("run")
    else:
        agg = mean_std_over_seeds(per_seed)
        result = {**common, "seeds": list(range(seed, seed + seeds)), "mean_std": agg, "per_seed": per_seed}
    path = out or Path(ckpt) / "metrics.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    if seeds == 1:
        m = per_seed[0]
        typer.echo(
            f"{split if kind == 'agd20k' else root}: mKLD {m['KLD']:.3f}  mSIM {m['SIM']:.3f}  mNSS {m['NSS']:.3f}  (n={m['n']}) -> {path}"
        )
    else:
        typer.echo(
            f"{split}, {seeds} seeds: "
            + "  ".join(f"m{k} {v['mean']:.3f} ± {v['std']:.3f}" for k, v in agg.items())
            + f" -> {path}"
        )


SHIPPED_CHECKPOINT = Path(__file__).parent / "assets" / "procedural-tiny"


@app.command()
def infer(
    image: Annotated[Path, typer.Option(help="object image")],
    text: Annotated[list[str], typer.Option(help="interaction text; repeat for several")],
    out: Annotated[Path, typer.Option(help="output directory")],
    ckpt: Annotated[
        Path | None,
        typer.Option(help="run directory (OUT/final); default: the shipped procedural-tiny checkpoint"),
    ] = None,
    image_encoder: Annotated[Path | None, typer.Option()] = None,
    text_encoder: Annotated[Path | None, typer.Option()] = None,
    alpha: float = 0.5,
) -> None:
    """Write a heatmap PNG (0-255) and an overlay PNG per text."""
    import tempfile

    from fourfold.intra.dataset import load_image
    from fourfold.intra.pipeline import IntraGrounder, overlay, save_heatmap_png

    picture = load_image(image)  # a corrupt image fails here, before anything is written
    if ckpt is None:  # the shipped checkpoint carries its own tiny encoders
        ckpt = SHIPPED_CHECKPOINT
        image_encoder = image_encoder or ckpt / "image_encoder"
        text_encoder = text_encoder or ckpt / "text_encoder"
    g = IntraGrounder.from_pretrained(ckpt, image_encoder=image_encoder, text_encoder=text_encoder)
    heats = g.ground_many(picture, text)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".tmp-infer-") as tmp:
        names = []
        for t, h in zip(text, heats, strict=True):
            stem = "_".join(t.split())
            save_heatmap_png(h, Path(tmp) / f"{stem}_heatmap.png")
            overlay(picture, h, alpha).save(Path(tmp) / f"{stem}_overlay.png")
            names += [f"{stem}_heatmap.png", f"{stem}_overlay.png"]
        for name in names:  # each file appears whole (rename within one filesystem)
            os.replace(Path(tmp) / name, out / name)
    typer.echo(f"wrote {2 * len(text)} files to {out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("demo_out/intra"),
    quick: Annotated[
        bool, typer.Option("--quick/--full", help="quick: 1 seed, 600 steps; full: 3 seeds")
    ] = True,
) -> None:
    """Train on the procedural part world on CPU; write metrics.json and overlay pictures."""
    result = run_demo(out, quick)
    for t in result.tables:
        typer.echo(t.title)
        for row in t.rows:
            typer.echo("  " + "  ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row))
    typer.echo(
        f"{result.seconds:.0f} s; checks: {sum(result.checks.values())}/{len(result.checks)} passed; {out}"
    )


@app.command("pretrain-encoder")
def pretrain_encoder_cmd(
    out: Annotated[Path, typer.Option(help="output Dinov2Model directory (written atomically)")],
    steps: Annotated[int, typer.Option(help="optimizer steps")] = 1500,
    batch_size: Annotated[int, typer.Option(help="images per step")] = 64,
    seed: int = 0,
    world_seed: Annotated[int, typer.Option(help="seed of the unlabelled renders")] = 1000,
    exo_per_pair: Annotated[int, typer.Option(help="exocentric renders per (affordance, object)")] = 6,
    ego_per_object: Annotated[int, typer.Option(help="egocentric renders per object")] = 100,
    probe: Annotated[
        bool, typer.Option(help="print linear probes (part type, object) after training")
    ] = True,
    run_dir: Annotated[
        Path | None, typer.Option(help="keep the Trainer's checkpoints and log here (default: a temp dir)")
    ] = None,
) -> None:
    """Pretrain the tiny image encoder self-supervised (DINO + iBOT) on unlabelled procedural renders."""
    import torch

    from fourfold.intra.encoders import load_image_encoder
    from fourfold.intra.pretrain_encoder import PretrainConfig, pretrain_image_encoder, probe_encoder

    torch.set_num_threads(1)
    cfg = PretrainConfig(
        steps=steps, batch_size=batch_size, seed=seed, world_seed=world_seed,
        exo_per_pair=exo_per_pair, ego_per_object=ego_per_object,
        warmup_steps=min(100, steps // 10),
    )  # fmt: skip
    pretrain_image_encoder(out, cfg, run_dir=run_dir)
    typer.echo(f"wrote the pretrained encoder to {out}")
    if probe:
        typer.echo(json.dumps(probe_encoder(load_image_encoder(out)), indent=1))


@data_app.command("procedural")
def data_procedural(
    out: Annotated[Path, typer.Option(help="output directory (AGD20K layout)")],
    seed: int = 0,
    exo_per_pair: int = 30,
    ego_per_object: int = 8,
) -> None:
    """Write the procedural part world (Seen/Unseen, exocentric train, egocentric test + GT)."""
    from fourfold.data.affordance_shapes import WorldConfig, make_affordance_world

    make_affordance_world(out, seed, WorldConfig(exo_per_pair=exo_per_pair, ego_per_object=ego_per_object))
    typer.echo(f"wrote the procedural world to {out}")


def run_demo(out_dir: Path, quick: bool = True):
    """Entry point for ``fourfold demo``: see :func:`fourfold.intra.demo.run_demo`."""
    from fourfold.intra.demo import run_demo as _run

    return _run(Path(out_dir), quick)


relmap_app = typer.Typer(name="relmap", help="Build a relationship map with your own LLM (no network call).")
app.add_typer(relmap_app, name="relmap")


def _labels(spec: str) -> list[str]:
    from fourfold.data.agd20k import SEEN_AFFORDANCES, UNSEEN_AFFORDANCES

    if spec in ("Seen", "Unseen"):
        return list(SEEN_AFFORDANCES if spec == "Seen" else UNSEEN_AFFORDANCES)
    path = Path(spec)
    if not path.is_file():
        raise typer.BadParameter(
            f"--labels must be Seen, Unseen or a file with one label per line; not found: {spec}"
        )
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@relmap_app.command("prompt")
def relmap_prompt(
    out: Annotated[Path, typer.Option(help="JSONL file of {a, b, prompt}, one per label pair")],
    labels: Annotated[str, typer.Option(help="Seen, Unseen or a file with one label per line")] = "Seen",
) -> None:
    """Write the chain-of-thought prompts (paper Fig. 3) for every label pair."""
    from fourfold.intra.relations import relation_prompts
    from fourfold.nn import atomic_write_text

    rows = relation_prompts(_labels(labels))
    atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in rows))
    typer.echo(f"wrote {len(rows)} prompts to {out}; add each reply as 'answer' and run `relmap parse`")


@relmap_app.command("parse")
def relmap_parse(
    answers: Annotated[Path, typer.Option(help="JSONL of {a, b, answer} with the LLM's replies")],
    out: Annotated[Path, typer.Option(help="relationship CSV (or .json) to write")],
    labels: Annotated[str, typer.Option(help="Seen, Unseen or a file with one label per line")] = "Seen",
) -> None:
    """Turn LLM replies into a relationship map file."""
    from fourfold.intra.relations import RelationError, parse_relation_answers

    try:
        rows = [json.loads(line) for line in answers.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as err:
        raise RelationError(f"cannot read answers {answers}: {err}") from err
    rel = parse_relation_answers(rows, _labels(labels))
    rel.save(out)
    typer.echo(f"wrote {out}: {rel}")


@app.command("convert-albef")
def convert_albef_cmd(
    checkpoint: Annotated[Path, typer.Option(help="ALBEF checkpoint (.pth), loaded with weights_only=True")],
    vocab: Annotated[Path, typer.Option(help="directory with the vocab.txt ALBEF used (bert-base-uncased)")],
    out: Annotated[Path, typer.Option(help="output BertModel + tokenizer directory")],
    fusion_layer: Annotated[int, typer.Option(help="text-only layers kept (ALBEF config_bert.json: 6)")] = 6,
) -> None:
    """Extract ALBEF's text encoder into a BERT directory usable as --text-encoder."""
    from fourfold.intra.convert import convert_albef

    convert_albef(checkpoint, vocab, out, fusion_layer)
    typer.echo(f"wrote {out}")
