"""Model base: a dataclass config recorded to ``config.json`` and weights in ``model.safetensors``.

Every fourfold model subclasses :class:`PretrainedModel` and names its config dataclass in
``config_class``. Loading validates before it touches anything: unknown config keys, missing or
unexpected weights, shape mismatches and truncated files each raise :class:`CheckpointError` naming the
problem. Nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint or pretrained directory cannot be loaded; the message names the file and the problem."""


# helpers


def atomic_write_dir(target: str | os.PathLike, write: typing.Callable[[Path], None]) -> Path:
    """Write a directory atomically: ``write(tmp)`` fills a sibling temp dir which then replaces ``target``.

    A crash mid-write leaves the previous ``target`` (if any) intact and at worst a ``.tmp-*`` sibling.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        write(tmp)
        for f in tmp.iterdir():  # flush file contents before the rename makes them visible
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if target.exists():
            old = target.with_name(f".old-{target.name}-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file via a temp file and ``os.replace`` so readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def config_to_dict(config: Any) -> dict[str, Any]:
    """Dataclass (possibly nested) -> JSON-ready dict; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls: type, data: Mapping[str, Any], *, source: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and rebuilding nested dataclasses."""
    if not isinstance(data, Mapping):
        raise CheckpointError(
            f"{source}: expected a JSON object for {cls.__name__}, got {type(data).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CheckpointError(
            f"{source}: unknown config key(s) {unknown} for {cls.__name__}; known keys: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints.get(name)
        kwargs[name] = _coerce(hint, value, f"{source}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: invalid {cls.__name__}: {err}") from err


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Rebuild dataclasses and tuples that JSON flattened to dicts and lists."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return config_from_dict(hint, value, source=where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in args:
            if arg is type(None):
                continue
            if dataclasses.is_dataclass(arg) and isinstance(value, Mapping):
                return config_from_dict(arg, value, source=where)
            if typing.get_origin(arg) is tuple and isinstance(value, list):
                return tuple(value)
        return value
    if (origin is tuple or hint is tuple) and isinstance(value, list):
        return tuple(value)
    return value


def load_safetensors_checked(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a missing, truncated or corrupt file into :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing weights file: {path}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"corrupt or truncated weights file {path}: {err}") from err


def check_state_dict(
    expected: Mapping[str, torch.Tensor],
    found: Mapping[str, torch.Tensor],
    *,
    source: str,
    strict: bool = True,
) -> None:
    """Raise :class:`CheckpointError` naming every missing/unexpected key and the first shape mismatches."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    problems = []
    if strict and missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if strict and unexpected:
        problems.append(
            f"unexpected keys ({len(unexpected)}): {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    mismatched = [
        f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(found))
        if tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        problems.append(f"shape mismatch: {'; '.join(mismatched[:8])}")
    if problems:
        raise CheckpointError(f"{source}: " + " | ".join(problems))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err


# the base class


class PretrainedModel(nn.Module):
    """``nn.Module`` with a dataclass config and safetensors save/load.

    Subclasses set ``config_class`` and take the config as the only positional argument of ``__init__``::

        @dataclass
        class TinyConfig:
            dim: int = 8

        class Tiny(PretrainedModel):
            config_class = TinyConfig
            def __init__(self, config: TinyConfig):
                super().__init__(config)
                self.proj = nn.Linear(config.dim, config.dim)
    """

    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} expects a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    # Subclasses whose state_dict holds derived buffers that need not be saved list their prefixes here.
    _non_persistent_prefixes: ClassVar[tuple[str, ...]] = ()

    def _weights_to_save(self) -> dict[str, torch.Tensor]:
        state = self.state_dict()
        state = {k: v for k, v in state.items() if not k.startswith(self._non_persistent_prefixes)}
        # safetensors refuses shared storage; clone tied/aliased tensors and make everything contiguous.
        seen: dict[tuple[int, int], str] = {}
        out = {}
        for k, v in state.items():
            v = v.detach()
            key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else (id(v), 0)
            out[k] = v.clone().contiguous() if key in seen else v.contiguous()
            seen[key] = k
        return out

    def _extra_files(self) -> dict[str, str]:
        """Text files saved beside the weights (file name -> content); subclasses add label lists, tables..."""
        return {}

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (+ ``_extra_files()``) to ``directory`` atomically."""
        weights = self._weights_to_save()
        config = {"model_type": type(self).__name__, **config_to_dict(self.config)}
        extra = self._extra_files()

        def write(tmp: Path) -> None:
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
            save_file(
                weights, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "model_type": type(self).__name__}
            )
            for name, text in extra.items():
                (tmp / name).write_text(text)

        return atomic_write_dir(directory, write)

    @classmethod
    def load_config(cls, directory: str | os.PathLike) -> Any:
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"pretrained directory not found: {directory}")
        data = dict(read_json(directory / CONFIG_NAME))
        model_type = data.pop("model_type", cls.__name__)
        if model_type != cls.__name__:
            raise CheckpointError(f"{directory / CONFIG_NAME}: holds a {model_type}, not a {cls.__name__}")
        return config_from_dict(cls.config_class, data, source=str(directory / CONFIG_NAME))

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        *,
        map_location: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        **config_overrides: Any,
    ) -> Self:
        """Rebuild the model from ``config.json`` and load ``model.safetensors`` strictly.

        ``config_overrides`` replace config fields (for example dropout at inference) before the build.
        """
        directory = Path(directory)
        config = cls.load_config(directory)
        if config_overrides:
            config = dataclasses.replace(config, **config_overrides)
        state = load_safetensors_checked(directory / WEIGHTS_NAME)
        model = cls(config)
        expected = {
            k: v for k, v in model.state_dict().items() if not k.startswith(cls._non_persistent_prefixes)
        }
        check_state_dict(expected, state, source=str(directory / WEIGHTS_NAME))
        model.load_state_dict(state, strict=False)
        if dtype is not None:
            model.to(dtype=dtype)
        return model.to(map_location)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
