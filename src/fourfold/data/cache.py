"""Feature caches for expensive frozen-encoder outputs (image features, audio latents, semantic tokens).

``FeatureCache(root, fingerprint)`` stores entries under ``root/<name>-<hash of fingerprint>/``: a new
encoder, checkpoint, preprocessing setting or code version gives a new fingerprint, hence a new folder,
so stale features are never reused. Entries live in safetensors files (``part-*.safetensors``) of up to
``shard_size`` entries, each written to a temporary name and renamed when complete: a killed run keeps
every file it finished and the next ``get_or_compute`` computes only what is still missing. Each file
names its entries in its safetensors metadata, so the set of files *is* the index (no second file to
keep consistent), and several processes may fill one cache with disjoint keys at the same time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import struct
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from fourfold.nn.modeling import atomic_write_text

__all__ = ["CacheError", "CachedFeatures", "FeatureCache", "MissingFeatureError", "module_fingerprint"]

Entry = torch.Tensor | dict[str, torch.Tensor]
CACHE_FORMAT = 1  # part of every fingerprint: a change of this file layout invalidates old caches
OPEN_FILES = 32  # safetensors handles kept open (each is a memory map)


class CacheError(RuntimeError):
    """A cache file is corrupt/truncated or a compute function returned something unusable; names it."""


class MissingFeatureError(KeyError):
    """A key was asked for that the cache does not hold."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


def fingerprint_hash(fingerprint: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the fingerprint as canonical JSON."""
    try:
        text = json.dumps(
            {"cache_format": CACHE_FORMAT, **fingerprint}, sort_keys=True, separators=(",", ":")
        )
    except TypeError as err:
        raise ValueError(f"the fingerprint must be JSON-serialisable: {err}") from err
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def module_fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's class and every state-dict tensor (name, dtype, shape, bytes).

    Put it in a cache fingerprint so that new weights under the same encoder name get a new cache.
    """
    digest = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_file(path: Path) -> dict[str, str]:
    """Validate a safetensors file's framing (header length, JSON, data size); return its metadata."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise CacheError(f"cache file {path} is truncated (no header)")
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                raise CacheError(
                    f"cache file {path} is corrupt or truncated: header length {length} > file size"
                )
            header = json.loads(fh.read(length))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
        raise CacheError(f"cache file {path} is corrupt: unreadable safetensors header ({err!r})") from err
    if size != 8 + length + end:
        raise CacheError(
            f"cache file {path} is truncated or corrupt: {size} bytes, its header needs {8 + length + end}"
        )
    metadata = header.get("__metadata__") or {}
    if "keys" not in metadata:
        raise CacheError(f"cache file {path} has no entry list in its metadata (not written by FeatureCache)")
    return metadata


def _rows(keys: Sequence[str], out: Any) -> list[Entry]:
    """Split a compute function's output into one entry per key (each a fresh contiguous CPU tensor)."""
    n = len(keys)

    def fresh(t: Any, where: str) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            raise CacheError(f"compute_fn returned {type(t).__name__} for {where}; expected a torch.Tensor")
        return t.detach().to("cpu").contiguous().clone()

    if isinstance(out, torch.Tensor | Mapping):
        batched = {"": out} if isinstance(out, torch.Tensor) else dict(out)
        for name, t in batched.items():
            if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[0] != n:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise CacheError(
                    f"compute_fn output {name or 'tensor'} has shape {shape}; expected first dim {n}"
                )
        if isinstance(out, torch.Tensor):
            return [fresh(out[i], f"row {i}") for i in range(n)]
        return [{k: fresh(t[i], f"{k}[{i}]") for k, t in batched.items()} for i in range(n)]
    if isinstance(out, list | tuple) and len(out) == n:
        return [
            {k: fresh(t, f"{keys[i]}/{k}") for k, t in row.items()}
            if isinstance(row, Mapping)
            else fresh(row, keys[i])
            for i, row in enumerate(out)
        ]
    raise CacheError(
        f"compute_fn must return a tensor or dict of tensors with first dim {n}, or a list of {n} entries; "
        f"got {type(out).__name__}"
    )


class FeatureCache:
    """Entries ``key -> tensor | {name: tensor}`` computed once per fingerprint.

    Args:
        root: folder holding the caches of all fingerprints.
        fingerprint: JSON-serialisable description of everything the features depend on: encoder name,
            :func:`module_fingerprint` of its weights or a config hash, preprocessing parameters, code
            version. Its optional ``"name"`` prefixes the folder name for humans.
        shard_size: entries per safetensors file; a killed run loses at most this many entries' work.
    """

    def __init__(
        self, root: str | os.PathLike, fingerprint: Mapping[str, Any], *, shard_size: int = 1024
    ) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.fingerprint = dict(fingerprint)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(self.fingerprint.get("name", "features")))[:48]
        self.dir = Path(root) / f"{name}-{fingerprint_hash(self.fingerprint)}"
        self.shard_size = shard_size
        self.dir.mkdir(parents=True, exist_ok=True)
        record = self.dir / "fingerprint.json"
        text = json.dumps(self.fingerprint, sort_keys=True, indent=1)
        if not record.exists():
            atomic_write_text(record, text)
        elif json.loads(record.read_text()) != json.loads(text):
            raise CacheError(f"{record} holds another fingerprint with the same hash; remove {self.dir}")
        self._remove_dead_temporaries()
        self._index: dict[str, tuple[Path, int]] = {}
        self._kinds: dict[Path, list[str] | None] = {}
        self._open: OrderedDict[Path, Any] = OrderedDict()
        self.refresh()

    def _remove_dead_temporaries(self) -> None:
        """Delete ``.tmp-<host>-<pid>-*`` files of killed writers on this host (live writers keep theirs)."""
        prefix = f".tmp-{socket.gethostname()}-"  # host names may contain dashes themselves
        for tmp in self.dir.glob(".tmp-*"):
            pid = tmp.name[len(prefix) :].split("-", 1)[0] if tmp.name.startswith(prefix) else ""
            if pid.isdigit() and not _pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)

    def refresh(self) -> None:
        """Pick up files written since (e.g. by other processes filling the same cache)."""
        for path in sorted(self.dir.glob("part-*.safetensors")):
            if path in self._kinds:
                continue
            meta = _check_file(path)
            keys = json.loads(meta["keys"])
            self._kinds[path] = json.loads(meta["fields"]) if meta.get("fields") else None
            for row, key in enumerate(keys):
                self._index.setdefault(key, (path, row))

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def keys(self) -> list[str]:
        return list(self._index)

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys (deduplicated, in order) that are not cached yet."""
        return [k for k in dict.fromkeys(keys) if k not in self._index]

    # writing

    def _write(self, entries: list[tuple[str, Entry]]) -> None:
        fields = sorted(entries[0][1]) if isinstance(entries[0][1], dict) else None
        tensors: dict[str, torch.Tensor] = {}
        for row, (key, value) in enumerate(entries):
            if (sorted(value) if isinstance(value, dict) else None) != fields:
                raise CacheError(
                    f"entry {key!r} has fields {sorted(value) if isinstance(value, dict) else None}, "
                    f"the others in its batch have {fields}"
                )
            if isinstance(value, dict):
                tensors.update({f"{row}.{name}": t for name, t in value.items()})
            else:
                tensors[str(row)] = value
        meta = {"keys": json.dumps([k for k, _ in entries]), "fields": json.dumps(fields) if fields else ""}
        final = self.dir / f"part-{uuid.uuid4().hex[:16]}.safetensors"
        tmp = self.dir / f".tmp-{socket.gethostname()}-{os.getpid()}-{final.name}"
        try:
            save_file(tensors, str(tmp), metadata=meta)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._kinds[final] = fields
        for row, (key, _) in enumerate(entries):
            self._index.setdefault(key, (final, row))

    def get_or_compute(
        self,
        keys: Iterable[str],
        compute_fn: Callable[[list[str]], Any],
        batch_size: int = 64,
        *,
        progress: bool = True,
    ) -> CachedFeatures:
        """Compute the missing entries in batches of ``batch_size`` keys, then return all of ``keys``.

        ``compute_fn(batch_keys)`` returns a tensor or ``{name: tensor}`` whose first dim is
        ``len(batch_keys)`` (row ``i`` belongs to ``batch_keys[i]``), or a list with one tensor / dict per
        key (variable shapes). Entries are stored exactly as returned (dtype and bits).
        """
        keys = list(keys)
        for k in keys:
            if not isinstance(k, str):
                raise TypeError(f"cache keys must be str, got {type(k).__name__} ({k!r})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        todo = self.missing(keys)
        pending: list[tuple[str, Entry]] = []
        with tqdm(total=len(todo), disable=not progress or not todo, desc=f"cache {self.dir.name}") as bar:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                pending += zip(batch, _rows(batch, compute_fn(batch)), strict=True)
                while len(pending) >= self.shard_size:
                    self._write(pending[: self.shard_size])
                    pending = pending[self.shard_size :]
                bar.update(len(batch))
            if pending:
                self._write(pending)
        return self.dataset(keys)

    # reading

    def _handle(self, path: Path) -> Any:
        handle = self._open.get(path)
        if handle is None:
            try:
                handle = safe_open(str(path), framework="pt", device="cpu")
            except (SafetensorError, OSError) as err:
                raise CacheError(f"cache file {path} is corrupt: {err}") from err
            self._open[path] = handle
            if len(self._open) > OPEN_FILES:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(path)
        return handle

    def load(self, key: str) -> Entry:
        """The entry of ``key`` (read through a memory map of its file)."""
        try:
            path, row = self._index[key]
        except KeyError:
            raise MissingFeatureError(
                f"key {key!r} is not in the feature cache {self.dir}; compute it with get_or_compute"
            ) from None
        handle, fields = self._handle(path), self._kinds[path]
        try:
            if fields is None:
                return handle.get_tensor(str(row))
            return {name: handle.get_tensor(f"{row}.{name}") for name in fields}
        except (SafetensorError, OSError) as err:
            raise CacheError(f"cache file {path} is corrupt: cannot read entry {key!r}: {err}") from err

    def dataset(self, keys: Iterable[str]) -> CachedFeatures:
        """A map-style dataset over ``keys`` (``ds[i]`` is ``load(keys[i])``); all must be cached."""
        return CachedFeatures(self, list(keys))

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers (spawn) get a copy without open maps
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state


class CachedFeatures(Dataset):
    """``keys[i] -> FeatureCache.load(keys[i])``; raises :class:`MissingFeatureError` up front if any is absent."""

    def __init__(self, cache: FeatureCache, keys: list[str]) -> None:
        absent = cache.missing(keys)
        if absent:
            raise MissingFeatureError(
                f"{len(absent)} of {len(keys)} keys are not in the feature cache {cache.dir} "
                f"(first: {absent[:3]}); compute them with get_or_compute"
            )
        self.cache, self.keys = cache, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Entry:
        return self.cache.load(self.keys[i])
