"""WebDataset-style tar shards: a writer, a resumable converter and a deterministic streaming reader.

Format (compatible with WebDataset readers): each shard is a plain tar whose members are named
``<key>.<field>.<ext>``; the members of one sample share ``<key>`` and are stored next to each other.
Our writer adds, per shard, a sidecar ``<shard>.json`` with every member's offset, size and CRC-32, and
one ``index.json`` listing the shards and their sample counts. Readers use the sidecars to read only the
samples they own (seek + read) and fall back to scanning the tar headers for shards made by other tools.

The stream of an epoch is a pure function of ``(seed, epoch)``: a seeded shard order, then a seeded
shuffle buffer, both over *references* ``(shard, sample)`` that every process and DataLoader worker
computes identically from the index. Each reference is then owned by exactly one rank and one worker
(round-robin in blocks of the local batch size), which reads and decodes only its own samples.
So ranks never overlap, and with ``batch_size`` given the batches are the same for any number of
processes or DataLoader workers (see :class:`ShardDataset`).
"""

from __future__ import annotations

import glob
import io
import json
import os
import random
import re
import tarfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from tqdm.auto import tqdm

from fourfold.nn.modeling import atomic_write_text

__all__ = [
    "INDEX_NAME",
    "FolderSamples",
    "ShardDataset",
    "ShardError",
    "ShardWriter",
    "decode_field",
    "encode_field",
    "write_shards_from",
]

INDEX_NAME = "index.json"
FORMAT = "fourfold-shards"
VERSION = 1
TAR_BLOCK = 512
OPEN_SHARDS = 16  # shards a reader keeps open (file handle + member table); a shuffle buffer spans few
TEXT_EXTS = frozenset({"txt", "text"})
INT_EXTS = frozenset({"cls", "cls2", "idx", "index", "id"})

Member = tuple[int, int, int | None]  # (data offset, size, crc32 or None when unknown)


class ShardError(ValueError):
    """A shard, member or index is missing, truncated, corrupt or undecodable; the message names it."""


# field encoding


def encode_field(name: str, value: Any) -> bytes:
    """Bytes stored for field ``name`` (``"<field>.<ext>"``, or a bare ``"<ext>"`` as in WebDataset).

    ``bytes`` are stored verbatim whatever the extension (``wav``, ``png``, ``mp4``, or files that are
    already encoded). Otherwise the extension decides: ``npy``: ``np.ndarray``/``torch.Tensor`` as
    ``.npy`` (never pickled); ``json``: any JSON value; ``txt``/``text``: ``str`` as UTF-8;
    ``cls``/``idx``/``id``: ``int`` as decimal text.
    """
    ext = name.rsplit(".", 1)[-1].lower()
    if not ext or name.startswith(".") or "/" in name:
        raise ShardError(f"field {name!r} must be named '<field>.<ext>' or '<ext>'")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if ext == "npy":
        if isinstance(value, torch.Tensor):
            if value.dtype == torch.bfloat16:
                raise ShardError(
                    f"field {name!r}: numpy has no bfloat16; convert the tensor to float32 first"
                )
            value = value.detach().cpu().numpy()
        if not isinstance(value, np.ndarray) or value.dtype == object:
            raise ShardError(
                f"field {name!r}: .npy needs a numeric np.ndarray or torch.Tensor, got {type(value)}"
            )
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(value), allow_pickle=False)
        return buf.getvalue()
    if ext == "json":
        try:
            return json.dumps(value, sort_keys=True).encode()
        except TypeError as err:
            raise ShardError(f"field {name!r}: not JSON-serialisable: {err}") from err
    if ext in TEXT_EXTS:
        if not isinstance(value, str):
            raise ShardError(f"field {name!r}: .{ext} needs a str, got {type(value).__name__}")
        return value.encode()
    if ext in INT_EXTS:
        if isinstance(value, torch.Tensor | np.ndarray) and value.ndim == 0:
            value = value.item()
        if not isinstance(value, int | np.integer) or isinstance(value, bool):
            raise ShardError(f"field {name!r}: .{ext} needs an int, got {type(value).__name__}")
        return str(int(value)).encode()
    raise ShardError(
        f"field {name!r}: .{ext} is stored as raw bytes, got {type(value).__name__} "
        "(use .npy for arrays/tensors, .json for numbers/dicts, .txt for text)"
    )


def decode_field(ext: str, data: bytes, *, to_torch: bool = True) -> Any:
    """Inverse of :func:`encode_field` for one member; unknown extensions come back as ``bytes``."""
    ext = ext.lower()
    if ext == "npy":
        array = np.load(io.BytesIO(data), allow_pickle=False)
        return torch.from_numpy(array.copy()) if to_torch else array
    if ext == "json":
        return json.loads(data)
    if ext in TEXT_EXTS:
        return data.decode()
    if ext in INT_EXTS:
        return int(data)
    return data


def _split_member(member: str) -> tuple[str, str]:
    """``"dir/key.field.ext"`` -> ``("dir/key", "field.ext")`` (WebDataset: the key ends at the first dot)."""
    folder, _, base = member.rpartition("/")
    key, dot, rest = base.partition(".")
    if not dot or not key or not rest:
        raise ValueError(f"member {member!r} is not named '<key>.<field>.<ext>'")
    return (f"{folder}/{key}" if folder else key), rest


# writer


def _write_shared_text(path: Path, text: str) -> None:
    """Atomic write, readable by everyone like the tar files (shard folders are often shared)."""
    atomic_write_text(path, text)
    os.chmod(path, 0o644)


def _padded(size: int) -> int:
    return -(-size // TAR_BLOCK) * TAR_BLOCK


def _final_size(written: int) -> int:
    """File size once closed: two zero blocks end the archive, then padding to a whole tar record."""
    return -(-(written + 2 * TAR_BLOCK) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


class ShardWriter:
    """Write samples into numbered tar shards under ``out_dir`` (``<prefix>-000000.tar``, ...).

    A sample is ``{"__key__": str, "<field>.<ext>": value, ...}`` (see :func:`encode_field`). A shard is
    closed after ``max_samples_per_shard`` samples or before it would exceed ``max_bytes`` (a sample larger
    than that gets a shard of its own); it is written
    under a temporary name and renamed when complete, then ``index.json`` is rewritten atomically, so a
    killed writer leaves only complete shards listed. ``resume=True`` keeps the shards the index lists,
    removes anything else it wrote, and continues after them (``num_samples`` says how many are done).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        max_samples_per_shard: int | None = 1000,
        max_bytes: int | None = None,
        *,
        prefix: str = "shard",
        resume: bool = False,
    ) -> None:
        if max_samples_per_shard is None and max_bytes is None:
            raise ValueError("give max_samples_per_shard or max_bytes (or both)")
        if max_samples_per_shard is not None and max_samples_per_shard < 1:
            raise ValueError(f"max_samples_per_shard must be >= 1, got {max_samples_per_shard}")
        if max_bytes is not None and max_bytes < tarfile.RECORDSIZE:
            raise ValueError(f"max_bytes must be >= {tarfile.RECORDSIZE} (one tar record), got {max_bytes}")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", prefix):
            raise ValueError(f"prefix must be letters, digits, '_' or '-', got {prefix!r}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_samples, self.max_bytes, self.prefix = max_samples_per_shard, max_bytes, prefix
        self.shards: list[dict[str, Any]] = []
        self._keys: set[str] = set()
        index_path = self.out_dir / INDEX_NAME
        if index_path.exists():
            index = _read_index(index_path)
            if not resume:
                raise ShardError(f"{index_path} exists: pass resume=True to continue it, or write elsewhere")
            settings = (index.get("max_samples_per_shard"), index.get("max_bytes"), index.get("prefix"))
            if settings != (max_samples_per_shard, max_bytes, prefix):
                raise ShardError(
                    f"{index_path} was written with (max_samples_per_shard, max_bytes, prefix)={settings}; "
                    f"resuming with {(max_samples_per_shard, max_bytes, prefix)} would change the shard boundaries"
                )
            for info in index["shards"]:
                _check_size(self.out_dir / info["name"], info["size"])
                for key, _ in _read_sidecar(self.out_dir / info["index"], self.out_dir / info["name"]):
                    self._keys.add(key)
                self.shards.append(info)
        listed = {n for s in self.shards for n in (s["name"], s["index"])}
        # temporaries of a killed writer, and shards/tables it wrote but never listed in the index
        own = re.compile(rf"(\.tmp-)?{prefix}-\d+\.(tar|json)|\.tmp-({prefix}-\d+\.json|{INDEX_NAME})-.+")
        for stale in self.out_dir.iterdir():
            if stale.name not in listed and own.fullmatch(stale.name):
                stale.unlink()
        self._tar: tarfile.TarFile | None = None
        self._fh: io.BufferedWriter | None = None
        self._members: list[tuple[str, dict[str, list[int]]]] = []

    @property
    def num_samples(self) -> int:
        """Samples written so far (those of resumed shards included)."""
        return sum(s["num_samples"] for s in self.shards) + len(self._members)

    def write(self, sample: Mapping[str, Any]) -> None:
        key = sample.get("__key__")
        if not isinstance(key, str) or not key or "." in key.rpartition("/")[2]:
            raise ShardError(f"sample key must be a non-empty str without '.', got {key!r}")
        if key in self._keys:
            raise ShardError(f"duplicate sample key {key!r}")
        fields = {name: encode_field(name, value) for name, value in sample.items() if name != "__key__"}
        if not fields:
            raise ShardError(f"sample {key!r} has no fields")
        size = sum(TAR_BLOCK * 3 + _padded(len(b)) for b in fields.values())  # headers (PAX ones included)
        if self._tar is not None and (
            (self.max_samples is not None and len(self._members) >= self.max_samples)
            or (self.max_bytes is not None and _final_size(self._fh.tell() + size) > self.max_bytes)  # type: ignore[union-attr]
        ):
            self._finish_shard()
        if self._tar is None:
            name = f".tmp-{self._shard_name(len(self.shards))}"
            self._fh = open(self.out_dir / name, "wb")  # noqa: SIM115 (closed in _finish_shard)
            self._tar = tarfile.open(fileobj=self._fh, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        table: dict[str, list[int]] = {}
        for name, data in fields.items():
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: reproducible shards
            self._tar.addfile(info, io.BytesIO(data))
            offset = self._fh.tell() - _padded(len(data))  # type: ignore[union-attr]
            table[name] = [offset, len(data), zlib.crc32(data)]
        self._members.append((key, table))
        self._keys.add(key)

    def _shard_name(self, i: int) -> str:
        return f"{self.prefix}-{i:06d}.tar"

    def _finish_shard(self) -> None:
        assert self._tar is not None and self._fh is not None
        self._tar.close()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        size = self._fh.tell()
        self._fh.close()
        name = self._shard_name(len(self.shards))
        sidecar = name[: -len(".tar")] + ".json"
        _write_shared_text(
            self.out_dir / sidecar, json.dumps({"shard": name, "size": size, "samples": self._members})
        )
        os.replace(self.out_dir / f".tmp-{name}", self.out_dir / name)
        self.shards.append({"name": name, "index": sidecar, "num_samples": len(self._members), "size": size})
        self._tar, self._fh, self._members = None, None, []
        self._write_index(complete=False)

    def _write_index(self, complete: bool) -> None:
        index = {
            "format": FORMAT,
            "version": VERSION,
            "complete": complete,
            "max_samples_per_shard": self.max_samples,
            "max_bytes": self.max_bytes,
            "prefix": self.prefix,
            "num_samples": sum(s["num_samples"] for s in self.shards),
            "shards": self.shards,
        }
        _write_shared_text(self.out_dir / INDEX_NAME, json.dumps(index, indent=1))

    def close(self) -> Path:
        """Finish the open shard and mark the index complete; returns the index path."""
        if self._tar is not None:
            self._finish_shard()
        self._write_index(complete=True)
        return self.out_dir / INDEX_NAME

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        elif self._fh is not None:  # keep the complete shards; drop the half-written one
            self._fh.close()
            (self.out_dir / f".tmp-{self._shard_name(len(self.shards))}").unlink(missing_ok=True)


def write_shards_from(
    dataset: Any,
    out_dir: str | os.PathLike,
    *,
    to_sample: Callable[[int, Any], Mapping[str, Any]] | None = None,
    max_samples_per_shard: int | None = 1000,
    max_bytes: int | None = None,
    prefix: str = "shard",
    progress: bool = True,
) -> Path:
    """Convert a map-style dataset (``len`` + ``__getitem__``) into shards; re-running resumes.

    ``dataset[i]`` (or ``to_sample(i, dataset[i])``) must give a sample dict; a missing ``__key__``
    becomes ``f"{i:09d}"``. Shards already listed in ``out_dir/index.json`` are kept and the conversion
    continues with the first sample after them, so a killed conversion loses at most one shard's work.
    Returns the path of ``index.json``.
    """
    writer = ShardWriter(out_dir, max_samples_per_shard, max_bytes, prefix=prefix, resume=True)
    start, total = writer.num_samples, len(dataset)
    with writer, tqdm(total=total, initial=start, disable=not progress, desc="shards", unit="sample") as bar:
        for i in range(start, total):
            item = dataset[i]
            sample = dict(to_sample(i, item) if to_sample is not None else item)
            sample.setdefault("__key__", f"{i:09d}")
            writer.write(sample)
            bar.update(1)
    return Path(out_dir) / INDEX_NAME


class FolderSamples:
    """A folder of files as a map-style dataset of samples, ready for :func:`write_shards_from`.

    Files are grouped by their path up to the first dot of their name: ``clips/a/0001.wav``,
    ``clips/a/0001.meta.json`` and ``clips/a/0001.mp4`` become the sample ``{"__key__": "a/0001",
    "wav": bytes, "meta.json": bytes, "mp4": bytes}`` (stored verbatim). Hidden files and folders and
    names without an extension are skipped. Samples are sorted by key, so a re-run resumes correctly.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a folder")
        groups: dict[str, dict[str, Path]] = {}
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root)
            if not path.is_file() or any(part.startswith(".") for part in rel.parts) or "." not in rel.name:
                continue
            stem, _, fields = rel.name.partition(".")
            key = str(rel.parent / stem) if rel.parent != Path(".") else stem
            groups.setdefault(key, {})[fields] = path
        self.samples = sorted(groups.items())

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        key, files = self.samples[i]
        return {"__key__": key, **{name: path.read_bytes() for name, path in files.items()}}


# reading the index


def _read_index(path: Path) -> dict[str, Any]:
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ShardError(f"cannot read shard index {path}: {err}") from err
    if index.get("format") != FORMAT or "shards" not in index:
        raise ShardError(f"{path} is not a {FORMAT} index")
    return index


def _check_size(path: Path, size: int) -> None:
    if not path.is_file():
        raise ShardError(f"shard {path} is missing")
    actual = path.stat().st_size
    if actual != size:
        raise ShardError(f"shard {path} is truncated or changed: {actual} bytes, its index says {size}")


def _read_sidecar(path: Path, shard: Path) -> list[tuple[str, dict[str, Member]]]:
    try:
        data = json.loads(path.read_text())
        return [(key, {f: (m[0], m[1], m[2]) for f, m in table.items()}) for key, table in data["samples"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ShardError(f"cannot read the member index {path} of shard {shard}: {err}") from err


def _scan_tar(path: Path) -> list[tuple[str, dict[str, Member]]]:
    """Member table of a tar without a sidecar (made by another tool), from its headers."""
    samples: list[tuple[str, dict[str, Member]]] = []
    file_size = path.stat().st_size
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile() or info.name.rpartition("/")[2].startswith("."):
                    continue
                if info.offset_data + info.size > file_size:
                    raise ShardError(
                        f"shard {path} is truncated: member {info.name} ends past the end of the file"
                    )
                try:
                    key, name = _split_member(info.name)
                except ValueError as err:
                    raise ShardError(f"shard {path}: {err}") from err
                if not samples or samples[-1][0] != key:
                    samples.append((key, {}))
                samples[-1][1][name] = (info.offset_data, info.size, None)
            # tarfile stops quietly at a cut-off header; a complete archive ends with two zero blocks
            if tar.offset + 2 * TAR_BLOCK > file_size:
                raise ShardError(
                    f"shard {path} is truncated: it ends inside a header or before the end-of-archive blocks"
                )
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ShardError(f"shard {path} is not a readable tar (corrupt or truncated): {err}") from err
    return samples


def _expand_braces(pattern: str) -> list[str]:
    """``a-{000..003}.tar`` -> four names (numeric ranges keep their zero padding); other braces stay."""
    match = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if match is None:
        return [pattern]
    lo, hi, width = int(match[1]), int(match[2]), len(match[1])
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [p for i in range(lo, hi + 1) for p in _expand_braces(f"{head}{i:0{width}d}{tail}")]


@dataclass
class _Shard:
    path: Path
    num_samples: int
    size: int | None  # expected byte size (from our index); None for foreign shards
    sidecar: Path | None
    samples: list[tuple[str, dict[str, Member]]] | None = field(default=None, repr=False)

    def release(self) -> None:
        """Drop the member table when it can be re-read cheaply from its sidecar (bounds reader memory)."""
        if self.sidecar is not None:
            self.samples = None

    def table(self) -> list[tuple[str, dict[str, Member]]]:
        if self.samples is None:
            if self.size is not None:
                _check_size(self.path, self.size)
            self.samples = _read_sidecar(self.sidecar, self.path) if self.sidecar else _scan_tar(self.path)
            if len(self.samples) != self.num_samples:
                raise ShardError(
                    f"shard {self.path}: {len(self.samples)} samples, its index says {self.num_samples}"
                )
        return self.samples


def _find_shards(
    source: str | os.PathLike | Sequence[str | os.PathLike], allow_incomplete: bool
) -> list[_Shard]:
    if isinstance(source, str | os.PathLike) and Path(source).is_dir():
        root = Path(source)
        if (root / INDEX_NAME).is_file():
            index = _read_index(root / INDEX_NAME)
            if not index.get("complete", False) and not allow_incomplete:
                raise ShardError(
                    f"{root / INDEX_NAME}: the conversion that wrote it did not finish; re-run it (it resumes) "
                    "or pass allow_incomplete=True"
                )
            for s in index["shards"]:  # fail before training starts, not hours into an epoch
                _check_size(root / s["name"], s["size"])
            return [
                _Shard(root / s["name"], s["num_samples"], s["size"], root / s["index"])
                for s in index["shards"]
            ]
        paths = sorted(root.glob("*.tar"))
    elif isinstance(source, str | os.PathLike):
        paths = sorted(Path(p) for pat in _expand_braces(str(source)) for p in (glob.glob(pat) or [pat]))
    else:
        paths = [Path(p) for p in source]
    if not paths:
        raise ShardError(f"no tar shards found at {source}")
    shards = []
    for path in paths:
        if not path.is_file():
            raise ShardError(f"shard {path} is missing")
        sidecar = path.with_suffix(".json")
        shard = _Shard(path, 0, None, sidecar if sidecar.is_file() else None)
        shard.samples = _read_sidecar(sidecar, path) if shard.sidecar else _scan_tar(path)
        shard.num_samples = len(shard.samples)
        shard.release()
        shards.append(shard)
    return shards


# reader


class ShardDataset(IterableDataset):
    """Stream samples from tar shards; deterministic per ``(seed, epoch)`` and split across ranks and workers.

    Args:
        source: a shard directory (its ``index.json``, else every ``*.tar`` in it), a glob or brace pattern
            (``data/shard-{000000..000099}.tar``), or a list of tar paths.
        decode: ``"torch"`` (``.npy`` -> tensor, ``.json``/``.txt``/``.cls`` -> Python values, other
            extensions -> bytes; keys lose their extension: ``"latent.npy"`` -> ``"latent"``), ``"numpy"``
            (the same with arrays), ``"raw"`` (``{"__key__", "<field>.<ext>": bytes}``) or a callable taking
            that raw dict.
        decoders: extra per-extension decoders for ``"torch"``/``"numpy"``, e.g. ``{"wav": read_wav}``.
        shuffle: shuffle the shard order and pass samples through a shuffle buffer (seeded by
            ``seed`` and the epoch); ``False`` reads in file order.
        shuffle_buffer: samples in the shuffle buffer (it holds references, not data, so it is cheap).
        seed: the stream is a pure function of ``(seed, epoch, rank, world_size, batch_size)``.
        batch_size: the *global* batch size the stream is read with (``TrainerConfig.batch_size``). When
            given, each epoch is cut to whole global batches and ranks/workers take turns in blocks of
            the local batch size, so rank ``r`` gets rows ``[r*B/R, (r+1)*B/R)`` of every global batch and
            the batches do not depend on the number of processes or DataLoader workers. When ``None``,
            ranks and workers take turns sample by sample (deterministic for a fixed launch).
        allow_incomplete: read a directory whose conversion has not finished.

    Protocol used by :class:`fourfold.train.Trainer`: ``splits_by_rank = True``, ``set_rank(rank, world)``,
    ``set_epoch(epoch)``. Each rank and worker reads and decodes only the samples it owns. For a fast
    mid-epoch resume, ``set_start(batches)`` skips batches without reading them.
    """

    splits_by_rank = True

    def __init__(
        self,
        source: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        decode: str | Callable[[dict[str, Any]], Any] = "torch",
        decoders: Mapping[str, Callable[[bytes], Any]] | None = None,
        shuffle: bool = True,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        batch_size: int | None = None,
        allow_incomplete: bool = False,
    ) -> None:
        if not callable(decode) and decode not in ("torch", "numpy", "raw"):
            raise ValueError(f"decode must be 'torch', 'numpy', 'raw' or a callable, got {decode!r}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        self.shards = _find_shards(source, allow_incomplete)
        self.decode, self.decoders = decode, dict(decoders or {})
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, shuffle_buffer, seed
        self.rank, self.world_size, self.epoch, self.start = 0, 1, 0, 0
        self.batch_size: int | None = None
        self.set_batch_size(batch_size)

    # the Trainer's protocol

    def set_rank(self, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if self.batch_size is not None and self.batch_size % world_size:
            raise ValueError(
                f"batch_size={self.batch_size} does not split evenly over {world_size} processes"
            )
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (seeds its shard order and shuffle buffer); also resets :meth:`set_start` to 0."""
        self.epoch, self.start = int(epoch), 0

    def set_start(self, batches: int) -> None:
        """Begin the current epoch after its first ``batches`` local batches, without reading them.

        For a fast resume: the samples skipped are never opened or decoded, and the batches that follow
        (with any number of DataLoader workers) are those of the uninterrupted epoch. Needs ``batch_size``.
        """
        if batches and self.batch_size is None:
            raise ValueError("set_start needs the dataset's batch_size (batches are not defined without it)")
        if not 0 <= batches <= self.batches_per_epoch():
            raise ValueError(
                f"set_start({batches}) is outside the epoch's {self.batches_per_epoch()} batches"
            )
        self.start = int(batches)

    def batches_per_epoch(self) -> int:
        """Local batches this rank yields per epoch (``batch_size`` given), else samples per epoch."""
        return len(self) // self._block()

    def set_batch_size(self, batch_size: int | None) -> None:
        """The global batch size (see the class docstring); ``None`` interleaves sample by sample."""
        if batch_size is not None and (batch_size < 1 or batch_size % self.world_size):
            raise ValueError(
                f"batch_size must be >= 1 and divisible by world_size={self.world_size}, got {batch_size}"
            )
        self.batch_size = batch_size

    # the stream

    @property
    def num_samples(self) -> int:
        """Samples in all shards."""
        return sum(s.num_samples for s in self.shards)

    def _epoch_length(self) -> int:
        n = self.num_samples
        return n if self.batch_size is None else n - n % self.batch_size

    def _block(self) -> int:
        return 1 if self.batch_size is None else self.batch_size // self.world_size

    def __len__(self) -> int:
        """Samples this rank yields per epoch (over all of its DataLoader workers)."""
        n, block, world = self._epoch_length(), self._block(), self.world_size
        full, rest = divmod(n // block, world)
        tail = n % block if (n // block) % world == self.rank else 0
        return full * block + (block if self.rank < rest else 0) + tail

    def references(self, epoch: int | None = None) -> Iterator[tuple[int, int]]:
        """The epoch's global stream as ``(shard index, sample index)``, identical in every process/worker."""
        epoch = self.epoch if epoch is None else epoch
        rng = random.Random(f"fourfold-shards:{self.seed}:{epoch}")  # str seeds hash deterministically
        order = list(range(len(self.shards)))
        if self.shuffle:
            rng.shuffle(order)
        stream = ((s, i) for s in order for i in range(self.shards[s].num_samples))
        limit = self._epoch_length()
        if not self.shuffle or self.shuffle_buffer <= 1:
            for n, ref in enumerate(stream):
                if n == limit:
                    return
                yield ref
            return
        buffer: list[tuple[int, int]] = []
        emitted = 0
        for ref in stream:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(ref)
                continue
            j = rng.randrange(len(buffer))
            if emitted == limit:
                return
            yield buffer[j]
            emitted += 1
            buffer[j] = ref
        rng.shuffle(buffer)
        yield from buffer[: limit - emitted]

    def __iter__(self) -> Iterator[Any]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        block, rank, world = self._block(), self.rank, self.world_size
        files: OrderedDict[int, Any] = OrderedDict()
        skip, local = self.start * block, 0
        try:
            for position, ref in enumerate(self.references()):
                if (position // block) % world != rank:
                    continue
                # workers take turns in blocks counted from the first block this iteration yields
                mine = local >= skip and ((local - skip) // block) % workers == worker_id
                local += 1
                if mine:
                    yield self._read(ref, files)
        finally:
            for s, fh in files.items():
                fh.close()
                self.shards[s].release()

    # reading one sample

    def _read(self, ref: tuple[int, int], files: OrderedDict[int, Any]) -> Any:
        s, i = ref
        shard = self.shards[s]
        fh = files.get(s)
        if fh is None:
            if len(files) >= OPEN_SHARDS:  # least recently used: close it and drop its member table
                old, old_fh = files.popitem(last=False)
                old_fh.close()
                self.shards[old].release()
            fh = files[s] = open(shard.path, "rb")  # noqa: SIM115 (closed in __iter__)
        else:
            files.move_to_end(s)
        key, table = shard.table()[i]
        raw: dict[str, bytes] = {}
        for name, (offset, size, crc) in table.items():
            fh.seek(offset)
            data = fh.read(size)
            if len(data) != size:
                raise ShardError(
                    f"shard {shard.path} is truncated: member {key}.{name} has {len(data)} of {size} bytes"
                )
            if crc is not None and zlib.crc32(data) != crc:
                raise ShardError(f"shard {shard.path} is corrupt: member {key}.{name} fails its CRC-32 check")
            raw[name] = data
        return self._decode(shard.path, key, raw)

    def _decode(self, path: Path, key: str, raw: dict[str, bytes]) -> Any:
        if self.decode == "raw":
            return {"__key__": key, **raw}
        if callable(self.decode):
            try:
                return self.decode({"__key__": key, **raw})
            except Exception as err:
                raise ShardError(f"shard {path}: sample {key!r} could not be decoded: {err!r}") from err
        out: dict[str, Any] = {"__key__": key}
        for name, data in raw.items():
            field_name, _, ext = name.rpartition(".")
            field_name = field_name or ext  # WebDataset's bare "<key>.<ext>" members
            try:
                decoder = self.decoders.get(ext)
                value = decoder(data) if decoder else decode_field(ext, data, to_torch=self.decode == "torch")
            except Exception as err:
                raise ShardError(
                    f"shard {path}: member {key}.{name} could not be decoded as .{ext}: {err!r}"
                ) from err
            if field_name in out:
                raise ShardError(f"shard {path}: sample {key!r} has two fields named {field_name!r}")
            out[field_name] = value
        return out
