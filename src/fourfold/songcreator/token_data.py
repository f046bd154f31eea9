"""DSLM training items from a folder of cached token files (the output of ``fourfold songcreator data tokenize``).

On-disk layout (one safetensors file per packed clip, written atomically)::

    TOKENS/<song id>@<start seconds>.safetensors
        tensors:  vocals (T,) int64, accompaniment (T,) int64, mixture (T,) int64   (codes, 50 Hz paper)
        metadata: {"id": "<song id>@<start>", "lyrics": "line 1\\nline 2" or "", "codebook_size": "16384"}

The three streams must have the same length (±1 frame is trimmed, more is an error naming the file).
``mixture`` is the song stream. A clip's prompts are the codes of another clip of the same song (spec
§2.4: 3–10 s from another clip; the recipe crops them). Empty lyrics become NULL.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fourfold.nn.modeling import CheckpointError
from fourfold.songcreator.lyrics import LyricsFrontend

__all__ = ["STREAMS", "load_token_items", "token_codebook_size", "write_token_file"]

STREAMS = ("vocals", "accompaniment", "mixture")


def write_token_file(
    path: str | os.PathLike,
    codes: dict[str, torch.Tensor],
    *,
    clip_id: str,
    lyrics: str | None,
    codebook_size: int,
) -> Path:
    """Write one clip's codes atomically (temp file + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    missing = [k for k in STREAMS if k not in codes]
    if missing:
        raise ValueError(f"{path}: missing streams {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(
        {k: torch.as_tensor(codes[k]).long().contiguous() for k in STREAMS},
        str(tmp),
        metadata={"id": clip_id, "lyrics": lyrics or "", "codebook_size": str(int(codebook_size))},
    )
    os.replace(tmp, path)
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as err:  # safetensors raises several types for a corrupt header
        raise CheckpointError(f"{path}: unreadable token file ({err})") from err
    missing = [k for k in STREAMS if k not in tensors]
    if missing:
        raise CheckpointError(f"{path}: token file lacks {missing} (has {sorted(tensors)})")
    for k in STREAMS:
        if tensors[k].ndim != 1 or tensors[k].dtype not in (torch.int64, torch.int32):
            raise CheckpointError(
                f"{path}: '{k}' must be a 1-D integer tensor, got {tensors[k].dtype} {tuple(tensors[k].shape)}"
            )
    lengths = {k: len(tensors[k]) for k in STREAMS}
    if max(lengths.values()) - min(lengths.values()) > 1:
        raise CheckpointError(f"{path}: stream lengths differ by more than one frame: {lengths}")
    n = min(lengths.values())
    return {k: tensors[k][:n].long() for k in STREAMS}, meta


def token_codebook_size(directory: str | os.PathLike) -> int:
    """The codebook size recorded in the files (or the largest code + 1 when absent)."""
    sizes, top = set(), 0
    for path in _files(Path(directory)):
        codes, meta = _read(path)
        if "codebook_size" in meta:
            sizes.add(int(meta["codebook_size"]))
        top = max(top, *(int(c.max()) + 1 for c in codes.values() if len(c)))
    if len(sizes) > 1:
        raise CheckpointError(f"{directory}: token files disagree on codebook_size: {sorted(sizes)}")
    size = sizes.pop() if sizes else top
    if top > size:
        raise CheckpointError(f"{directory}: a code ({top - 1}) is outside codebook_size {size}")
    return size


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such token directory")
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(
            f"{directory}: no *.safetensors token files (run `fourfold songcreator data tokenize`)"
        )
    return files


def load_token_items(
    directory: str | os.PathLike, frontend: LyricsFrontend, *, max_frames: int | None = None
) -> list[dict]:
    """Items for :class:`~fourfold.songcreator.training.TokenSongDataset` from a token folder.

    ``max_frames`` crops longer clips (the DSLM's ``max_stream_tokens``). Prompts come from another clip
    of the same song (the id before ``@``), when the song has one.
    """
    clips = []
    for path in _files(Path(directory)):
        codes, meta = _read(path)
        if len(codes["vocals"]) == 0:
            raise CheckpointError(f"{path}: empty clip")
        clip_id = meta.get("id", path.stem)
        lyrics = meta.get("lyrics") or None
        try:
            ids = frontend.encode(lyrics, truncate=True)
        except ValueError as err:
            raise CheckpointError(f"{path}: lyrics rejected by the front end ({err})") from err
        if max_frames is not None:
            codes = {k: v[:max_frames] for k, v in codes.items()}
        clips.append((clip_id.split("@")[0], codes, ids))
    by_song: dict[str, list[int]] = {}
    for i, (song, _, _) in enumerate(clips):
        by_song.setdefault(song, []).append(i)
    items = []
    for i, (song, codes, ids) in enumerate(clips):
        item = {
            "lyrics": ids,
            "vocals": codes["vocals"],
            "accompaniment": codes["accompaniment"],
            "song": codes["mixture"],
        }
        others = [j for j in by_song[song] if j != i]
        if others:
            other = clips[others[i % len(others)]][1]
            item["prompt_vocals"], item["prompt_accompaniment"] = other["vocals"], other["accompaniment"]
        items.append(item)
    return items
