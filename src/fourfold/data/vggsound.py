"""VGGSound(-Caption) and AudioCaps style clip folders (Draw an Audio spec §5).

Layout read by :class:`VGGSoundClips`::

    root/vggsound.csv        official, no header: youtube_id,start_seconds,label,split
    root/video/<stem>.mp4    audio from the mp4, or root/audio/<stem>.wav when present
    root/captions.jsonl      VGGSound-Caption: {"id": "<stem>", "caption": "..."} per line
                             (or captions.json: a list of such objects; or captions.csv: id,caption)
    root/masks/<stem>.json   optional: {"frames": [{"t": 0.0, "boxes": [[x0,y0,x1,y1]]}, ...], "phrase": ...}

``<stem>`` is ``name_template.format(ytid=..., start=...)`` (default ``{ytid}_{start:06d}``). A clip without
a caption gets "the sound of {label}" (counted in ``fallback_captions``). Clips whose mp4 is missing or does
not open are skipped at construction and listed in ``skipped`` as ``(stem, reason)``, never substituted;
one that opens but fails to decode later raises :class:`fourfold.audio.io.VideoError` naming the file.
VGGSound: about 200k 10-s clips, 309 classes, about 15k test (arXiv 2004.14368).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["AudioCapsClips", "ClipFolderError", "VGGSoundClips", "read_captions"]

log = logging.getLogger(__name__)


class ClipFolderError(ValueError):
    """The dataset folder itself is unusable (missing index, malformed caption file); names the file."""


def read_captions(root: Path) -> dict[str, str]:
    """Captions by clip stem from ``captions.jsonl`` / ``captions.json`` / ``captions.csv`` (first found)."""
    out: dict[str, str] = {}
    jsonl, js, cs = root / "captions.jsonl", root / "captions.json", root / "captions.csv"
    if jsonl.is_file():
        for n, line in enumerate(jsonl.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out[str(row["id"])] = str(row["caption"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ClipFolderError(
                    f"{jsonl}:{n}: expected {{'id', 'caption'}} JSON, got {line[:80]!r}"
                ) from err
    elif js.is_file():
        try:
            rows = json.loads(js.read_text())
            out = {str(r["id"]): str(r["caption"]) for r in rows}
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ClipFolderError(
                f"{js}: expected a JSON list of {{'id', 'caption'}} objects ({err})"
            ) from err
    elif cs.is_file():
        with cs.open(newline="") as fh:
            for n, row in enumerate(csv.reader(fh), 1):
                if not row or (n == 1 and row[0] == "id"):
                    continue
                if len(row) < 2:
                    raise ClipFolderError(f"{cs}:{n}: expected id,caption, got {row}")
                out[row[0]] = row[1]
    return out


def _probe(path: Path) -> str | None:
    """``None`` when ``path`` opens as a video with a video stream, else the reason it does not."""
    import av

    if not path.is_file():
        return "missing file"
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return "no video stream"
    except Exception as err:  # PyAV raises several InvalidDataError subclasses
        return f"does not open: {err}"
    return None


class _ClipFolder:
    """Shared reading: ``self.items`` holds ``{"stem", "caption", "label"}``; subclasses fill it."""

    root: Path
    items: list[dict[str, Any]]
    skipped: list[tuple[str, str]]

    def __init__(self, root: str | Path, sample_rate: int = 16000, duration: float | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ClipFolderError(f"dataset root {self.root} is not a directory")
        self.sample_rate, self.duration = sample_rate, duration
        self.items, self.skipped = [], []

    def _keep_valid(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            reason = _probe(self.root / "video" / f"{row['stem']}.mp4")
            if reason is None:
                self.items.append(row)
            else:
                self.skipped.append((row["stem"], reason))
        if self.skipped:
            log.warning(
                "%s: skipped %d unreadable clips, e.g. %s", self.root, len(self.skipped), self.skipped[:3]
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from fourfold.audio import io as aio

        row = self.items[i]
        vpath = self.root / "video" / f"{row['stem']}.mp4"
        wpath = self.root / "audio" / f"{row['stem']}.wav"
        frames, fps, audio, sr = aio.read_video(vpath, with_audio=not wpath.is_file())
        if wpath.is_file():
            audio, sr = aio.load_audio(wpath, sr=self.sample_rate)
        elif audio is None or audio.size == 0:
            raise aio.AudioError(f"{vpath} has no audio stream and {wpath} does not exist")
        elif sr != self.sample_rate:
            audio = aio.resample(audio, sr, self.sample_rate)
        if not np.any(audio):
            raise aio.AudioError(f"the audio of clip {row['stem']} ({vpath}) is silent")
        if self.duration is not None:
            n = round(self.duration * self.sample_rate)
            audio = np.pad(audio[:n], (0, max(0, n - len(audio))))
            frames = frames[: max(1, round(self.duration * fps))]
        mask_path = self.root / "masks" / f"{row['stem']}.json"
        mask = json.loads(mask_path.read_text()) if mask_path.is_file() else None
        return {
            "video": frames,
            "fps": fps,
            "audio": audio.astype(np.float32),
            "sr": self.sample_rate,
            "caption": row["caption"],
            "mask": mask,  # mask.json dict (keyframed boxes) or None = whole frame
            "loudness": None,  # computed from audio by the model's preprocessing
            "onsets": None,  # unknown for real clips: metrics detect them
            "meta": {"id": row["stem"], "label": row.get("label"), "path": str(vpath)},
        }


class VGGSoundClips(_ClipFolder):
    """VGGSound clips of one ``split`` ("train" | "test") with VGGSound-Caption captions; see module doc."""

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        name_template: str = "{ytid}_{start:06d}",
        sample_rate: int = 16000,
        duration: float | None = None,
    ):
        super().__init__(root, sample_rate, duration)
        index = self.root / "vggsound.csv"
        if not index.is_file():
            raise ClipFolderError(f"missing VGGSound index {index} (youtube_id,start_seconds,label,split)")
        captions = read_captions(self.root)
        self.fallback_captions = 0
        rows = []
        with index.open(newline="") as fh:
            for n, rec in enumerate(csv.reader(fh), 1):
                if not rec:
                    continue
                if len(rec) != 4:
                    raise ClipFolderError(
                        f"{index}:{n}: expected 4 fields youtube_id,start_seconds,label,split: {rec}"
                    )
                ytid, start, label, sp = (x.strip() for x in rec)
                if sp != split:
                    continue
                try:
                    stem = name_template.format(ytid=ytid, start=int(start))
                except ValueError as err:
                    raise ClipFolderError(f"{index}:{n}: start_seconds {start!r} is not an integer") from err
                caption = captions.get(stem)
                if caption is None:
                    caption = f"the sound of {label}"
                    self.fallback_captions += 1
                rows.append({"stem": stem, "caption": caption, "label": label})
        if self.fallback_captions:
            log.info(
                "%s: %d clips have no caption; using 'the sound of {label}'", index, self.fallback_captions
            )
        self._keep_valid(rows)


class AudioCapsClips(_ClipFolder):
    """AudioCaps ``test.csv`` (``audiocap_id,youtube_id,start_time,caption``, header row) over ``root/video``."""

    def __init__(
        self,
        root: str | Path,
        csv_name: str = "test.csv",
        name_template: str = "{ytid}_{start:06d}",
        sample_rate: int = 16000,
        duration: float | None = None,
    ):
        super().__init__(root, sample_rate, duration)
        index = self.root / csv_name
        if not index.is_file():
            raise ClipFolderError(f"missing AudioCaps index {index}")
        rows = []
        with index.open(newline="") as fh:
            reader = csv.DictReader(fh)
            need = {"audiocap_id", "youtube_id", "start_time", "caption"}
            if not need <= set(reader.fieldnames or ()):
                raise ClipFolderError(f"{index}: header must contain {sorted(need)}, got {reader.fieldnames}")
            for rec in reader:
                stem = name_template.format(ytid=rec["youtube_id"], start=int(float(rec["start_time"])))
                rows.append({"stem": stem, "caption": rec["caption"], "label": None})
        self._keep_valid(rows)
