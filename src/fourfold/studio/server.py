"""The studio's FastAPI app: one static page (four tabs) and a JSON API per system.

``create_app(StudioConfig(...))`` builds the app; :func:`serve` runs it with uvicorn on 127.0.0.1 by
default. Routes shared by every page: ``/api/info`` (which model each page runs), ``/api/upload``
(validated uploads -> file ids), ``/api/files/{id}/{name}`` (registered files only), ``/api/waveform``,
``/api/jobs/{id}`` (progress, live values, result) and ``/api/jobs/{id}/cancel``.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from fourfold.nn.modeling import CheckpointError
from fourfold.studio.files import MEDIA_TYPES, FileStore, UploadError, UploadLimits
from fourfold.studio.jobs import Busy, JobManager
from fourfold.studio.models import StudioModels, heavy_imports

__all__ = ["Studio", "StudioConfig", "create_app", "serve"]

STATIC = Path(__file__).parent / "static"


@dataclass
class StudioConfig:
    models: Path | None = None  # --models DIR (see fourfold.studio.models)
    paths: dict[str, Path] = field(default_factory=dict)  # per-system checkpoint folders (override --models)
    data: list[Path] = field(default_factory=list)  # image folders (or their parents) SaRA may train on
    work: Path | None = None  # uploads/outputs/tiny models; a temp folder when None
    limits: UploadLimits = field(default_factory=UploadLimits)
    max_threads: int | None = None  # torch intra-op threads for generation/training


class Studio:
    """Everything the routes share: files, jobs, models, allowed folders."""

    def __init__(self, cfg: StudioConfig) -> None:
        self.cfg = cfg
        self.work = Path(cfg.work or tempfile.mkdtemp(prefix="fourfold-studio-")).resolve()
        self.files = FileStore(self.work / "files", cfg.limits)
        self.jobs = JobManager()
        self.models = StudioModels(cfg.models, self.work, paths=cfg.paths)
        self.data_roots = [Path(p).resolve() for p in cfg.data]


def create_app(cfg: StudioConfig | None = None):
    from fourfold.studio.pages import drawaudio, intra, sara, songcreator

    studio = Studio(cfg or StudioConfig())
    if studio.cfg.max_threads:
        import torch

        torch.set_num_threads(studio.cfg.max_threads)
    app = FastAPI(title="fourfold studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio
    # warm the heavy imports in the background so the first page action is quicker
    threading.Thread(target=heavy_imports, name="studio-imports", daemon=True).start()

    @app.exception_handler(UploadError)
    async def _upload_error(_request: Request, err: UploadError):
        return JSONResponse({"detail": str(err)}, status_code=400)

    @app.exception_handler(ValueError)
    async def _value_error(_request: Request, err: ValueError):
        return JSONResponse({"detail": f"{type(err).__name__}: {err}"}, status_code=400)

    @app.exception_handler(CheckpointError)
    async def _checkpoint_error(_request: Request, err: CheckpointError):
        return JSONResponse({"detail": f"{type(err).__name__}: {err}"}, status_code=400)

    @app.exception_handler(Busy)
    async def _busy(_request: Request, err: Busy):
        return JSONResponse({"detail": str(err)}, status_code=409)

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    def info():
        return {"models": studio.models.info(), "limits": studio.cfg.limits.__dict__}

    @app.get("/api/info/{system}")
    def info_system(system: str):
        if system not in ("drawaudio", "intra", "songcreator", "sara"):
            raise HTTPException(404, f"unknown system {system!r}")
        return studio.models.get(system)[1].to_dict()

    @app.post("/api/upload")
    def upload(file: UploadFile = File(...), kind: str = Form(...)):
        chunks = iter(lambda: file.file.read(1 << 20), b"")  # the size cap is enforced while copying
        return studio.files.save_upload(file.filename or "upload", chunks, kind).to_dict()

    @app.get("/api/files/{file_id}/{name}")
    def get_file(file_id: str, name: str, download: bool = False):
        try:
            f = studio.files.get(file_id)
        except UploadError as err:
            raise HTTPException(404, str(err)) from err
        if name != f.path.name or not f.path.is_file():
            raise HTTPException(404, "no such file")
        media = MEDIA_TYPES.get(f.path.suffix.lower(), "application/octet-stream")
        return FileResponse(f.path, media_type=media, filename=f.path.name if download else None)

    @app.get("/api/waveform/{file_id}")
    def waveform(file_id: str, n: int = 600):
        """Min/max peaks of an audio file in ``n`` columns (for the waveform views)."""
        from fourfold.audio.io import load_audio

        f = studio.files.get(file_id, "audio")
        wav, sr = load_audio(f.path, allow_silent=True)
        n = int(min(max(n, 10), 4000))
        cols = np.array_split(wav, n)
        return {
            "duration": len(wav) / sr, "sample_rate": sr,
            "min": [float(c.min()) if len(c) else 0.0 for c in cols],
            "max": [float(c.max()) if len(c) else 0.0 for c in cols],
        }  # fmt: skip

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str):
        j = studio.jobs.get(job_id)
        if j is None:
            raise HTTPException(404, f"unknown job {job_id}")
        return j.to_dict()

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str):
        j = studio.jobs.cancel(job_id)
        if j is None:
            raise HTTPException(404, f"unknown job {job_id}")
        return j.to_dict()

    for module in (drawaudio, intra, songcreator, sara):
        app.include_router(module.router(studio))
    return app


def serve(cfg: StudioConfig, host: str = "127.0.0.1", port: int = 7860, log_level: str = "warning") -> None:
    import uvicorn

    app = create_app(cfg)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: anyone who can reach this address can use the studio")
    print(f"fourfold studio: http://{host}:{port}  (work folder {app.state.studio.work})")
    uvicorn.run(app, host=host, port=port, log_level=log_level)
