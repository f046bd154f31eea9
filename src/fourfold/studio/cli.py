"""``fourfold studio``: serve the local web app (Draw an Audio, INTRA, SongCreator, SaRA pages)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="studio", help="Local web app to use the four systems by hand.", invoke_without_command=True
)


@app.callback(invoke_without_command=True)
def studio(
    port: Annotated[int, typer.Option(help="port to listen on")] = 7860,
    host: Annotated[
        str, typer.Option(help="address to bind; the default keeps it on this machine")
    ] = "127.0.0.1",
    models: Annotated[
        Path | None,
        typer.Option(
            help="folder with drawaudio/, intra/, songcreator/, sara/<model>/ checkpoints; "
            "a system without one runs its shipped checkpoint"
        ),
    ] = None,
    drawaudio: Annotated[
        Path | None,
        typer.Option(help="Draw an Audio adapter checkpoint (or base) folder; overrides --models"),
    ] = None,
    intra: Annotated[Path | None, typer.Option(help="INTRA run folder; overrides --models")] = None,
    songcreator: Annotated[
        Path | None, typer.Option(help="SongCreator pipeline folder (pipeline.json); overrides --models")
    ] = None,
    data: Annotated[
        list[Path] | None,
        typer.Option(help="image folder (or a parent of several) SaRA may train on; repeatable"),
    ] = None,
    work: Annotated[
        Path | None,
        typer.Option(help="folder for uploads, outputs and tiny models (default: a new temp folder)"),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads for generation and training")] = None,
    max_video_seconds: Annotated[float, typer.Option(help="longest video accepted")] = 30.0,
) -> None:
    """Serve the studio at http://HOST:PORT (127.0.0.1 by default: only this machine can reach it)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise typer.BadParameter(
            f"the studio needs the [ui] extra: pip install 'fourfold[ui]' ({err})"
        ) from err
    from fourfold.studio.files import UploadLimits
    from fourfold.studio.server import StudioConfig, serve

    for p in [models, drawaudio, intra, songcreator, *(data or [])]:
        if p is not None and not p.is_dir():
            raise typer.BadParameter(f"not a folder: {p}")
    paths = {
        k: v for k, v in {"drawaudio": drawaudio, "intra": intra, "songcreator": songcreator}.items() if v
    }
    cfg = StudioConfig(
        models=models,
        paths=paths,
        data=list(data or []),
        work=work,
        max_threads=threads,
        limits=UploadLimits(max_video_seconds=max_video_seconds),
    )
    serve(cfg, host=host, port=port)


def main() -> None:  # python -m fourfold.studio.cli
    app()


if __name__ == "__main__":
    main()
