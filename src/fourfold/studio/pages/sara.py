"""SaRA page API: fine-tune a base model's UNet on an image folder with a live loss curve; stop/resume;
samples before/after and at several α; download the delta.

The loop is the one of ``fourfold.sara.train.finetune`` (VAE latents × scaling factor, frozen CLIP text,
``fourfold.diffusion.training_step``, + the nuclear-norm rank loss, AdamW at ``handle.learning_rate()``,
grad-norm clip 1, ``handle.on_step`` for progressive re-selection) written out step by step, so that the
page can stream the loss and pause between steps: *Stop* cancels the job after the current step; *Resume*
continues from that step.

A session's training state (the SaRA values and active masks, AdamW moments, handle counters, step and loss
history) is written atomically to ``<work>/sara-sessions/<id>/`` whenever a run stops (Stop, the last step,
an error) and every ``SAVE_EVERY`` steps, so a session survives the studio being closed: start the studio
again with the same ``--work`` folder and the page lists it under *Saved sessions* to resume, sample or
download. The frozen base is not copied: it is re-read from the base directory, re-wrapped with the same
selection, and checked against the saved support before anything is loaded. Base models and image folders
are picked by name from the folders the studio was started with.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field

from fourfold.studio.jobs import Job
from fourfold.studio.models import LOAD_LOCK

MAX_SESSIONS = 2  # sessions held in memory; older ones stay on disk and are reloaded on demand
MAX_SAVED = 8  # sessions kept on disk (oldest pruned)
SAVE_EVERY = 50  # steps between saves while training (a crash loses at most this many)
SESSION_ID = re.compile(r"[0-9a-f]{10}")


class StartIn(BaseModel):
    base: str
    folder: str
    steps: int = Field(default=60, ge=1, le=100000)
    fraction: float = Field(default=0.05, gt=0, le=1)
    lambda_rank: float = Field(default=5e-3, ge=0)
    batch_size: int = Field(default=4, ge=1, le=64)
    lr: float | None = Field(default=None, gt=0)
    prefix: str = ""
    seed: int = 0


class CompareIn(BaseModel):
    session: str
    prompt: str = "outline red three"
    guidance: float = Field(default=3.0, ge=1.0, le=20.0)  # classifier-free guidance scale (1 = off)
    alphas: list[float] = Field(default=[0.0, 0.5, 1.0, 1.5], min_length=1, max_length=8)
    steps: int = Field(default=10, ge=1, le=200)
    seed: int = 0


@dataclass
class Session:
    id: str
    cfg: StartIn
    parts: object  # fourfold.sara.pipelines.TextToImageParts: pipeline, denoiser, schedule, text encoding
    handle: object
    optimizer: torch.optim.Optimizer
    data: object
    base_path: str
    folder_path: str
    step: int = 0
    losses: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    job: str | None = None

    @property
    def unet(self):
        """The denoiser SaRA wraps (UNet for SD/SDXL, transformer for SD3)."""
        return self.parts.denoiser

    @property
    def resolution(self) -> int:
        return self.parts.resolution

    def live(self) -> dict:
        opt_bytes = sum(t.numel() * t.element_size() for s in self.optimizer.state.values()
                        for t in s.values() if torch.is_tensor(t))  # fmt: skip
        total = sum(p.numel() for p in self.unet.parameters())
        mem = {"rss_mb": _rss_mb(), "optimizer_state_mb": opt_bytes / 2**20}
        if torch.cuda.is_available():
            mem["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return {
            "session": self.id, "step": self.step, "total_steps": self.cfg.steps, "losses": self.losses[-2000:],
            "trainable": int(self.handle.num_trainable()), "support": int(self.handle.num_support()),
            "unet_params": int(total), "threshold": float(self.handle.threshold), "memory": mem,
        }  # fmt: skip


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _options(studio) -> dict:
    """Base models and image folders the page may offer: name -> path (only inside the given roots)."""
    opts, _ = studio.models.get("sara")
    folders = dict(opts["folders"])
    from fourfold.sara.data import IMAGE_SUFFIXES

    for root in studio.data_roots:
        for d in sorted([root, *(p for p in root.iterdir() if p.is_dir())]) if root.is_dir() else []:
            # a symlinked subfolder pointing outside the given roots is not offered
            if studio.files.inside(d, studio.data_roots) and any(
                f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir()
            ):
                folders[d.name] = str(d)
    return {"bases": opts["bases"], "folders": folders}


def router(studio):
    from fastapi import APIRouter, HTTPException

    r = APIRouter(prefix="/api/sara")
    sessions: dict[str, Session] = {}
    studio.sara_sessions = sessions  # sessions held in memory (tests and the server inspect them)

    def session(sid: str) -> Session:
        if not SESSION_ID.fullmatch(sid):
            raise HTTPException(404, f"unknown fine-tuning session {sid!r}: start one")
        if sid not in sessions:
            if not (_sessions_root(studio) / sid / "session.json").is_file():
                raise HTTPException(404, f"unknown fine-tuning session {sid}: start one")
            _remember(sessions, _restore_session(studio, sid))
        return sessions[sid]

    @r.get("/options")
    def options():
        o = _options(studio)
        return {"bases": [{"name": k, "trained": v["trained"]} for k, v in o["bases"].items()],
                "folders": [{"name": k, "images": _count_images(v)} for k, v in o["folders"].items()]}  # fmt: skip

    @r.get("/sessions")
    def saved():
        """Sessions saved on disk, newest first (those of earlier studio runs with the same --work too)."""
        return {"sessions": [_summary(m) for m in _saved_sessions(studio)]}

    @r.post("/start")
    def start(req: StartIn):
        o = _options(studio)
        if req.base not in o["bases"]:
            raise ValueError(f"unknown base model {req.base!r}; one of {sorted(o['bases'])}")
        if req.folder not in o["folders"]:
            raise ValueError(f"unknown image folder {req.folder!r}; one of {sorted(o['folders'])}")
        s = _new_session(req, o["bases"][req.base]["path"], o["folders"][req.folder], uuid.uuid4().hex[:10])
        _remember(sessions, s)
        return _run(s)

    def _run(s: Session) -> dict:
        def run(job: Job) -> dict:
            with s.lock:
                try:
                    return _train(s, job, lambda: _save_session(studio, s))
                finally:
                    _save_session(studio, s)  # Stop, the last step or an error: the state survives

        job = studio.jobs.start("sara", run)
        s.job = job.id
        job.live = s.live()
        return {"session": s.id, "job": job.to_dict()}

    @r.post("/resume/{sid}")
    def resume(sid: str):
        s = session(sid)
        if s.step >= s.cfg.steps:
            raise ValueError(f"session {sid} already finished its {s.cfg.steps} steps")
        return _run(s)

    @r.get("/session/{sid}")
    def status(sid: str):
        return session(sid).live()

    @r.post("/compare")
    def compare(req: CompareIn):
        s = session(req.session)
        if not s.lock.acquire(timeout=0.5):
            raise ValueError("stop the fine-tuning first: samples need the weights to stand still")
        try:
            return _compare(studio, s, req)
        finally:
            s.lock.release()

    @r.post("/delta/{sid}")
    def delta(sid: str):
        s = session(sid)
        if not s.lock.acquire(timeout=0.5):
            raise ValueError("stop the fine-tuning first: the delta is saved from still weights")
        try:
            d = studio.files.new_output_dir("sara-delta")
            s.handle.save_pretrained(d / "adapter")
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for f in sorted((d / "adapter").iterdir()):
                    z.write(f, f"sara-adapter/{f.name}")
            path = d / "sara-adapter.zip"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(buf.getvalue())
            os.replace(tmp, path)
            return studio.files.output(path, "download", bytes=path.stat().st_size, step=s.step).to_dict()
        finally:
            s.lock.release()

    return r


def _remember(sessions: dict[str, Session], s: Session) -> None:
    """Hold ``s`` in memory, dropping the oldest sessions beyond MAX_SESSIONS (they stay on disk)."""
    sessions.pop(s.id, None)
    while len(sessions) >= MAX_SESSIONS:
        sessions.pop(next(iter(sessions)))
    sessions[s.id] = s


def _new_session(req: StartIn, base_path: str, folder_path: str, sid: str) -> Session:
    """Load the base (SD 1.x/2.x, SDXL or SD3), wrap its denoiser with SaRA, build the optimizer.

    Deterministic given ``req``: the same base and fraction give the same selection.
    """
    from diffusers import DDIMScheduler

    from fourfold.sara.config import SaraConfig
    from fourfold.sara.data import CaptionedImages
    from fourfold.sara.handle import wrap
    from fourfold.sara.pipelines import load_parts

    torch.manual_seed(req.seed)
    with LOAD_LOCK:
        parts = load_parts(base_path)
    if parts.kind != "sd3":  # sampling: DDIM over the training schedule (SD3 keeps its flow-matching sampler)
        parts.pipe.scheduler = DDIMScheduler.from_config(parts.pipe.scheduler.config)
    data = CaptionedImages(folder_path, parts.resolution, prefix=req.prefix)
    handle = wrap(parts.denoiser, SaraConfig(threshold=None, fraction=req.fraction, lambda_rank=req.lambda_rank,
                                             progressive_at=0.5, rank_min_dim=8, lr=req.lr))  # fmt: skip
    opt = torch.optim.AdamW(handle.parameters(), lr=handle.learning_rate(), weight_decay=1e-2)
    return Session(sid, req, parts, handle, opt, data, base_path=str(base_path), folder_path=str(folder_path))


def _sessions_root(studio) -> Path:
    return Path(studio.work) / "sara-sessions"


def _sara_state(unet) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """The trainable SaRA tensors (values, active masks) and a checksum of each support (indices).

    The frozen base weights and the support itself are not saved: both come back from the base
    directory, and the checksum proves the re-computed support is the one the values belong to.
    """
    tensors, support = {}, {}
    for key, value in unet.state_dict().items():
        if ".parametrizations." not in f".{key}" or key.endswith(".original") or key.endswith(".base_values"):
            continue
        if key.endswith(".indices"):
            support[key] = [int(value.numel()), int(value.sum())]
        else:
            tensors[key] = value
    return tensors, support


def _save_session(studio, s: Session) -> None:
    from fourfold.nn.modeling import atomic_write_dir
    from fourfold.train.checkpoint import optimizer_state_to_files, save_tensors

    s.handle.sync()  # settle pending writes so PPA-frozen entries hold their fine-tuned values
    tensors, support = _sara_state(s.unet)
    meta = {"format": "fourfold-studio-sara-session/1", "id": s.id, "config": s.cfg.model_dump(),
            "base_path": s.base_path, "folder_path": s.folder_path, "step": s.step, "losses": s.losses,
            "handle": s.handle.state_dict(), "support": support, "saved": time.time()}  # fmt: skip

    def write(tmp: Path) -> None:
        save_tensors(tmp / "sara_state.safetensors", tensors)
        optimizer_state_to_files(s.optimizer, tmp)
        (tmp / "session.json").write_text(json.dumps(meta))

    root = _sessions_root(studio)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_dir(root / s.id, write)
    for old in _saved_sessions(studio)[MAX_SAVED:]:
        shutil.rmtree(root / old["id"], ignore_errors=True)


def _saved_sessions(studio) -> list[dict]:
    root = _sessions_root(studio)
    out = []
    for d in root.iterdir() if root.is_dir() else []:
        if SESSION_ID.fullmatch(d.name) and (d / "session.json").is_file():
            try:
                out.append(json.loads((d / "session.json").read_text()))
            except (OSError, json.JSONDecodeError):
                continue  # a damaged session is not offered; resuming it by id names the problem
    return sorted(out, key=lambda m: -m.get("saved", 0))


def _summary(meta: dict) -> dict:
    cfg = meta["config"]
    return {"session": meta["id"], "base": cfg["base"], "folder": cfg["folder"], "step": meta["step"],
            "total_steps": cfg["steps"], "saved": meta["saved"]}  # fmt: skip


def _restore_session(studio, sid: str) -> Session:
    """Rebuild a saved session: same base + selection, then the saved values, moments and counters."""
    from fourfold.nn.modeling import CheckpointError, load_safetensors_checked
    from fourfold.train.checkpoint import optimizer_state_from_files

    d = _sessions_root(studio) / sid
    try:
        meta = json.loads((d / "session.json").read_text())
        req = StartIn(**meta["config"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"saved SaRA session {sid} is damaged ({type(err).__name__}: {err})") from err
    o = _options(studio)
    base = o["bases"].get(req.base, {}).get("path")
    folder = o["folders"].get(req.folder)
    if base is None or Path(base).resolve() != Path(meta["base_path"]).resolve():
        raise ValueError(f"saved session {sid} fine-tunes base model {req.base!r} ({meta['base_path']}), which "
                         "this studio does not offer: start it with the same --models/--work folders")  # fmt: skip
    if folder is None:
        raise ValueError(
            f"saved session {sid} trains on image folder {req.folder!r}, which this studio does not offer"
        )
    s = _new_session(req, base, folder, sid)
    tensors, support = _sara_state(s.unet)
    if support != meta["support"]:
        raise CheckpointError(f"saved session {sid} does not match base model {req.base!r}: the weights at "
                              f"{base} changed since it was saved (different SaRA selection)")  # fmt: skip
    saved = load_safetensors_checked(d / "sara_state.safetensors")
    if set(saved) != set(tensors):
        raise CheckpointError(
            f"saved session {sid} holds other SaRA tensors than base model {req.base!r} gives"
        )
    for key, value in saved.items():
        if value.shape != tensors[key].shape:
            raise CheckpointError(f"saved session {sid}: {key} has shape {tuple(value.shape)}, "
                                  f"the base gives {tuple(tensors[key].shape)}")  # fmt: skip
    s.unet.load_state_dict(saved, strict=False)
    for module in s.unet.modules():
        if getattr(module, "is_sara", False):
            # the base came fresh from its directory, not from a checkpoint holding the patch: the next
            # write must put every saved value (PPA-frozen ones too) into it rather than read them back
            module._base_holds_patch = False
    s.optimizer.load_state_dict(optimizer_state_from_files(d))
    s.handle.load_state_dict(meta["handle"])
    s.step, s.losses = int(meta["step"]), [float(v) for v in meta["losses"]]
    return s


def _count_images(folder: str) -> int:
    from fourfold.sara.data import IMAGE_SUFFIXES

    return sum(1 for f in Path(folder).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)


def _train(s: Session, job: Job, save: Callable[[], None]) -> dict:
    cfg, unet = s.cfg, s.unet
    unet.train()
    n = len(s.data)
    t0 = time.time()
    while s.step < cfg.steps:
        job.check()  # Stop: the session keeps its state; Resume continues at s.step
        # a seed per step (batch, VAE sample, t, noise): stopped + resumed (even from disk, in a new
        # process) == uninterrupted; fork_rng gives the global generator back afterwards
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed * 1_000_003 + s.step)
            idx = torch.randint(0, n, (cfg.batch_size,)).tolist()
            items = [s.data[i] for i in idx]
            pixels = torch.stack([it["pixel_values"] for it in items])
            loss = s.parts.loss(unet, pixels, [it["text"] for it in items])
        if cfg.lambda_rank > 0:
            loss = loss + s.handle.rank_loss(draw=s.step)
        value = float(loss.detach())
        if not np.isfinite(value):  # checked before the update, so the saved state stays the last good one
            raise FloatingPointError(f"loss became {value} at step {s.step + 1}: lower the learning rate")
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(s.handle.parameters(), 1.0)
        s.optimizer.step()
        s.step += 1
        s.handle.on_step(s.optimizer, s.step, cfg.steps)
        s.losses.append(value)
        if s.step % SAVE_EVERY == 0 and s.step < cfg.steps:
            save()
        job.live = s.live()
        job.update(s.step / cfg.steps, f"step {s.step}/{cfg.steps}, loss {value:.4f}")
    unet.eval()
    return {"session": s.id, "step": s.step, "final_loss": s.losses[-1] if s.losses else None,
            "seconds": time.time() - t0}  # fmt: skip


@torch.no_grad()
def _compare(studio, s: Session, req: CompareIn) -> dict:
    """One sample per α (α = 0 is the base model before fine-tuning), same seed and prompt."""
    from PIL import Image

    s.unet.eval()
    pipe = s.parts.pipe  # holds the wrapped denoiser itself, so α scales apply to it
    d = studio.files.new_output_dir("sara-samples")
    out = []
    try:
        for alpha in req.alphas:
            s.handle.scale(float(alpha))
            img = pipe(req.prompt, num_inference_steps=req.steps, guidance_scale=req.guidance, height=s.resolution,
                       width=s.resolution, generator=torch.Generator().manual_seed(req.seed)).images[0]  # fmt: skip
            side = max(128, img.width)
            img = img.resize((side, side), Image.NEAREST)
            path = d / f"alpha{alpha:g}.png"
            img.save(path)
            out.append({"alpha": alpha, **studio.files.output(path, "image").to_dict()})
    finally:
        s.handle.scale(1.0)  # α = 1 restores the fine-tuned weights bit-exactly
    return {"session": s.id, "step": s.step, "prompt": req.prompt, "samples": out}


__all__ = ["CompareIn", "Session", "StartIn", "router"]
