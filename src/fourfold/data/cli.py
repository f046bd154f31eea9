"""``fourfold data ...``: convert folders to tar shards and verify shards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(name="data", help="Large-dataset tools: tar shards and their checks.", no_args_is_help=True)


@app.command("shards")
def shards(
    source: Annotated[
        Path, typer.Option("--from", help="Folder of files; files sharing a name stem form a sample.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Output folder for shard-*.tar, their member tables, index.json.")
    ],
    max_samples: Annotated[int, typer.Option(help="Samples per shard.")] = 1000,
    max_bytes: Annotated[
        int | None, typer.Option(help="Also close a shard before it passes this many bytes.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Convert a folder dataset to tar shards; re-running after an interruption resumes."""
    from fourfold.data.shards import FolderSamples, ShardError, write_shards_from

    try:
        samples = FolderSamples(source)
        if len(samples) == 0:
            raise ShardError(f"{source} holds no files with an extension")
        index = write_shards_from(
            samples, out, max_samples_per_shard=max_samples, max_bytes=max_bytes, progress=progress
        )
    except (ShardError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(f"{len(samples)} samples -> {index}")


@app.command("verify")
def verify(
    source: Annotated[str, typer.Argument(help="Shard folder, glob/brace pattern or a single .tar.")],
    decode: Annotated[bool, typer.Option(help="Also decode every member (.npy, .json, ...).")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Read every member of every shard, checking sizes and CRC-32s (and optionally decoding)."""
    from tqdm.auto import tqdm

    from fourfold.data.shards import ShardDataset, ShardError

    try:
        ds = ShardDataset(source, decode="numpy" if decode else "raw", shuffle=False)
        count = 0
        for _ in tqdm(ds, total=ds.num_samples, disable=not progress, unit="sample"):
            count += 1
    except ShardError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(f"ok: {len(ds.shards)} shards, {count} samples")
