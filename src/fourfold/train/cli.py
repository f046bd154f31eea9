"""``fourfold trainer``: the shared Trainer's own job (spiral classifier) and its demo."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="trainer", help="The shared Trainer: a tiny end-to-end job and its demo.", no_args_is_help=True
)


@app.command("toy")
def toy(
    out: Annotated[Path, typer.Option(help="Run directory (checkpoints, train_log.jsonl, model/).")],
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 300,
    batch_size: Annotated[int, typer.Option(min=1, help="Global micro-batch.")] = 32,
    grad_accum: Annotated[int, typer.Option(min=1)] = 1,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-3,
    schedule: Annotated[str, typer.Option(help="constant | cosine | linear")] = "cosine",
    checkpoint_every: Annotated[int, typer.Option(min=0, help="0: only the final checkpoint.")] = 50,
    keep_last: Annotated[int, typer.Option(min=1)] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    ema: Annotated[float | None, typer.Option(help="EMA decay, e.g. 0.99.")] = None,
    mixed_precision: Annotated[str, typer.Option(help="no | bf16 | fp16")] = "no",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")
    ] = False,
    step_delay: Annotated[
        float, typer.Option(hidden=True, help="Sleep per step (tests kill a run mid-way).")
    ] = 0.0,
    dropout: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Dropout in the MLP (uses the RNG).")
    ] = 0.0,
    cpu: Annotated[
        bool, typer.Option("--cpu", help="Force CPU (needed for CPU DDP under torchrun).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a small MLP on procedural spirals with the shared Trainer (resumable, DDP-ready)."""
    from fourfold.train.config import TrainerConfig
    from fourfold.train.toy import SpiralNetConfig, train_spirals

    config = TrainerConfig(
        output_dir=str(out),
        max_steps=steps,
        batch_size=batch_size,
        grad_accum=grad_accum,
        learning_rate=lr,
        lr_schedule=schedule,
        checkpoint_every=checkpoint_every,
        keep_last=keep_last,
        seed=seed,
        ema_decay=ema,
        mixed_precision=mixed_precision,
        eval_every=max(1, steps // 5),
        progress=progress,
        cpu=cpu,
    )
    _, result = train_spirals(
        config, resume=resume, step_delay=step_delay, model_config=SpiralNetConfig(dropout=dropout)
    )
    last = result.eval_history[-1] if result.eval_history else {}
    typer.echo(
        f"done: step {result.step}, final loss {result.losses[-1]:.4f}, "
        f"held-out accuracy {last.get('eval/accuracy', float('nan')):.3f}, model saved to {out / 'model'}"
    )


def run_demo(out_dir: Path, quick: bool = True):
    """Train the spiral classifier, plot its loss curve and decision regions; returns a DemoResult."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from fourfold.data.toy import SpiralDataset
    from fourfold.report import DemoResult, Media, Table
    from fourfold.train.config import TrainerConfig
    from fourfold.train.toy import train_spirals

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = 1500 if quick else 5000
    config = TrainerConfig(
        output_dir=str(out_dir / "run"),
        max_steps=steps,
        batch_size=64,
        learning_rate=3e-3,
        lr_schedule="cosine",
        warmup_steps=20,
        ema_decay=0.99,
        eval_every=steps // 10,
        checkpoint_every=steps // 2,
        progress=False,
    )
    model, result = train_spirals(config)
    losses = result.losses
    evals = result.eval_history

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(range(1, len(losses) + 1), losses, lw=0.8, label="train loss")
    ax[0].axhline(torch.log(torch.tensor(2.0)).item(), color="gray", ls="--", lw=0.8, label="chance (ln 2)")
    ax[0].set_xlabel("optimizer step")
    ax[0].set_ylabel("cross-entropy")
    ax[0].set_yscale("log")
    ax[0].legend()
    ax[0].set_title("Trainer: loss curve")
    grid = torch.stack(
        torch.meshgrid(torch.linspace(-1.2, 1.2, 200), torch.linspace(-1.2, 1.2, 200), indexing="xy"), -1
    )
    with torch.no_grad():
        probs = model(grid.reshape(-1, 2)).softmax(-1)[:, 1].reshape(200, 200)
    data = SpiralDataset(512, seed=config.seed + 1)
    ax[1].imshow(probs.numpy(), extent=(-1.2, 1.2, -1.2, 1.2), origin="lower", cmap="coolwarm", alpha=0.6)
    ax[1].scatter(
        data.x[:, 0], data.x[:, 1], c=data.labels, cmap="coolwarm", s=4, edgecolors="k", linewidths=0.2
    )
    ax[1].set_title("decision regions (EMA weights), held-out points")
    fig.tight_layout()
    fig.savefig(out_dir / "trainer_curves.png", dpi=110)
    plt.close(fig)

    final_acc = evals[-1]["eval/accuracy"] if evals else float("nan")
    chance = float(torch.log(torch.tensor(2.0)))
    return DemoResult(
        system="trainer",
        title="Shared Trainer (spiral classifier)",
        summary=(
            "A 3-layer MLP learns two interleaved spirals through fourfold.train.Trainer (AdamW, cosine schedule "
            "with warmup, clipping, EMA, atomic checkpoints). Evaluation uses the EMA weights on held-out points."
        ),
        metrics={
            "steps": result.step,
            "first_loss": losses[0],
            "final_loss": losses[-1],
            "heldout_accuracy": final_acc,
            "train_seconds": result.seconds,
        },
        tables=[
            Table(
                "Evaluation during training (held-out accuracy, EMA weights)",
                ["step", "accuracy"],
                [[e["step"], e["eval/accuracy"]] for e in evals],
            )
        ],
        figures=[Media("trainer_curves.png", "Loss curve and learned decision regions")],
        seconds=time.perf_counter() - started,
        checks={
            "loss falls below chance level": losses[-1] < chance,
            "held-out accuracy above 0.9": final_acc > 0.9,
        },
    )


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option(help="Output directory (report.html, metrics.json, pictures).")] = Path(
        "demo-out/trainer"
    ),
    full: Annotated[bool, typer.Option("--full", help="Train 5,000 steps instead of 1,500.")] = False,
) -> None:
    """Train the spiral classifier and write a report with its loss curve."""
    from fourfold.report import write_report

    result = run_demo(out, quick=not full)
    report, _ = write_report([result], out.parent if out.name == "trainer" else out)
    typer.echo(f"report: {report}")
