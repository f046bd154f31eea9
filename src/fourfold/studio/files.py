"""Files the studio may show: uploads, generated outputs and bundled examples, each behind an opaque id.

The browser never names a path. Every file it can fetch was registered here (an upload, an output, a
bundled example); folders the user may pick (SaRA base models, image folders) are subfolders of the
roots given on the command line, checked with :meth:`FileStore.inside`. Uploads are size-capped while
streaming, then decoded once to check type and length; a bad one raises :class:`UploadError` with the
reason, and nothing of it is kept.
"""

from __future__ import annotations

import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["KINDS", "FileStore", "StoredFile", "UploadError", "UploadLimits"]

KINDS = {
    "video": (".mp4", ".mov", ".webm", ".mkv", ".avi"),
    "audio": (".wav", ".flac", ".ogg", ".mp3"),
    "image": (".png", ".jpg", ".jpeg", ".webp", ".bmp"),
}
MEDIA_TYPES = {
    ".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm", ".mkv": "video/x-matroska",
    ".avi": "video/x-msvideo", ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg",
    ".mp3": "audio/mpeg", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
    ".webp": "image/webp", ".bmp": "image/bmp", ".json": "application/json", ".zip": "application/zip",
    ".safetensors": "application/octet-stream",
}  # fmt: skip


class UploadError(ValueError):
    """An upload was refused; the message is shown in the page."""


@dataclass
class UploadLimits:
    max_bytes: int = 200 * 1024 * 1024
    max_video_seconds: float = 30.0
    max_audio_seconds: float = 120.0
    max_image_pixels: int = 4096 * 4096
    max_video_megapixels: float = 250.0  # frames x height x width once decoded (RGB: 3 bytes per pixel)


@dataclass
class StoredFile:
    id: str
    path: Path
    kind: str  # video | audio | image | output | bundled
    name: str
    info: dict

    @property
    def url(self) -> str:
        return f"/api/files/{self.id}/{self.path.name}"

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "kind": self.kind, "url": self.url, **self.info}


def _hide(err: Exception, path: Path) -> str:
    """The error text without the server-side folder (the page shows only the file's own name)."""
    return str(err).replace(str(path.parent) + "/", "").replace(str(path), path.name)


def _safe_name(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).strip("._") or "file"
    return stem[-80:]


class FileStore:
    def __init__(self, root: Path, limits: UploadLimits | None = None) -> None:
        self.root = Path(root).resolve()
        self.limits = limits or UploadLimits()
        self._files: dict[str, StoredFile] = {}
        self._lock = threading.Lock()
        (self.root / "uploads").mkdir(parents=True, exist_ok=True)
        (self.root / "outputs").mkdir(parents=True, exist_ok=True)

    # registry

    def add(self, path: Path, kind: str, name: str | None = None, **info) -> StoredFile:
        f = StoredFile(uuid.uuid4().hex[:16], Path(path).resolve(), kind, name or Path(path).name, info)
        with self._lock:
            self._files[f.id] = f
        return f

    def get(self, file_id: str, kind: str | tuple[str, ...] | None = None) -> StoredFile:
        f = self._files.get(str(file_id))
        if f is None:
            raise UploadError(f"unknown file id {file_id!r}: upload the file again")
        kinds = (kind,) if isinstance(kind, str) else kind
        if kinds is not None and f.kind not in kinds and f.info.get("media") not in kinds:
            have = f.info.get("media", f.kind)
            raise UploadError(
                f"{f.name} is {'an' if have[0] in 'aeiou' else 'a'} {have} file; this needs {' or '.join(kinds)}"
            )
        return f

    def new_output_dir(self, prefix: str) -> Path:
        d = self.root / "outputs" / f"{prefix}-{uuid.uuid4().hex[:10]}"
        d.mkdir(parents=True)
        return d

    def output(self, path: Path, media: str, **info) -> StoredFile:
        return self.add(path, "output", media=media, **info)

    @staticmethod
    def inside(path: Path, roots: list[Path]) -> bool:
        """Is ``path`` (symlinks resolved) inside one of ``roots``?"""
        p = Path(path).resolve()
        return any(p == r.resolve() or p.is_relative_to(r.resolve()) for r in roots)

    # uploads

    def save_upload(self, name: str, chunks, kind: str) -> StoredFile:
        """Stream ``chunks`` (bytes iterator) to disk under a cap, then validate as ``kind``."""
        if kind not in KINDS:
            raise UploadError(f"unknown upload kind {kind!r}; one of {sorted(KINDS)}")
        suffix = Path(name or "").suffix.lower()
        if suffix not in KINDS[kind]:
            article = "an" if kind[0] in "aeiou" else "a"
            raise UploadError(
                f"{name!r} is not {article} {kind} file: expected one of {', '.join(KINDS[kind])}"
            )
        folder = self.root / "uploads" / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True)
        path = folder / _safe_name(name)
        size = 0
        try:
            with open(path, "wb") as fh:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.limits.max_bytes:
                        raise UploadError(f"{name!r} is larger than {self.limits.max_bytes // 2**20} MiB")
                    fh.write(chunk)
            if size == 0:
                raise UploadError(f"{name!r} is empty")
            info = getattr(self, f"_check_{kind}")(path, name)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return self.add(path, kind, name=name, size=size, media=kind, **info)

    def _probe_video(self, path: Path, name: str) -> None:
        """Refuse a too long or too large video from its header, before decoding every frame."""
        import av

        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise UploadError(f"{name!r} has no video stream")
                stream = container.streams.video[0]
                seconds = float(container.duration or 0) / 1e6  # 0 when the header does not say
                fps = float(stream.average_rate or stream.guessed_rate or 0)
                w, h = stream.codec_context.width, stream.codec_context.height
        except UploadError:
            raise
        except Exception as err:
            raise UploadError(f"{name!r} is not a readable video: {_hide(err, path)}") from err
        if seconds > self.limits.max_video_seconds + 0.5:
            raise UploadError(
                f"{name!r} is {seconds:.1f} s long; the studio takes videos up to {self.limits.max_video_seconds:g} s"
            )
        megapixels = seconds * fps * w * h / 1e6
        if megapixels > self.limits.max_video_megapixels:
            raise UploadError(
                f"{name!r} is {w}x{h} at {fps:.0f} fps for {seconds:.1f} s ({megapixels:.0f} Mpx decoded); the studio "
                f"takes up to {self.limits.max_video_megapixels:g} Mpx: downscale it or cut it shorter"
            )

    def _check_video(self, path: Path, name: str) -> dict:
        from fourfold.audio import io as aio

        self._probe_video(path, name)
        try:
            frames, fps, _, _ = aio.read_video(path, with_audio=False)
        except Exception as err:
            raise UploadError(f"{name!r} is not a readable video: {_hide(err, path)}") from err
        seconds = len(frames) / fps
        if seconds > self.limits.max_video_seconds:
            raise UploadError(
                f"{name!r} is {seconds:.1f} s long; the studio takes videos up to {self.limits.max_video_seconds:g} s"
            )
        return {
            "frames": len(frames),
            "fps": fps,
            "duration": seconds,
            "height": frames.shape[1],
            "width": frames.shape[2],
        }

    def _check_audio(self, path: Path, name: str) -> dict:
        from fourfold.audio import io as aio

        try:
            wav, sr = aio.load_audio(path)
        except Exception as err:
            raise UploadError(f"{name!r} is not a readable audio file: {_hide(err, path)}") from err
        seconds = len(wav) / sr
        if seconds > self.limits.max_audio_seconds:
            raise UploadError(
                f"{name!r} is {seconds:.1f} s long; the studio takes audio up to {self.limits.max_audio_seconds:g} s"
            )
        return {"duration": seconds, "sample_rate": sr}

    def _check_image(self, path: Path, name: str) -> dict:
        from PIL import Image

        try:
            with Image.open(path) as im:
                w, h = im.size
                if w * h > self.limits.max_image_pixels:
                    raise UploadError(f"{name!r} is {w}x{h} pixels; the studio takes up to 4096x4096")
                np.asarray(im.convert("RGB"))  # decodes every pixel: a truncated file fails here
        except UploadError:
            raise
        except Exception as err:
            raise UploadError(f"{name!r} is not a readable image: {_hide(err, path)}") from err
        return {"width": w, "height": h}
