"""Pickle-free training checkpoints: model, optimizer, scheduler, EMA, RNG states and data position.

A checkpoint is a directory ``checkpoint-<step:08d>/``:

- ``model.safetensors``      the unwrapped model's state_dict
- ``optimizer.safetensors``  every tensor of the optimizer state, keyed ``state.<param index>.<name>``
- ``optimizer.json``         param_groups and the non-tensor entries of the state
- ``scheduler.json``         the LR scheduler's state_dict (plain numbers)
- ``ema.safetensors``        EMA shadow weights, when EMA is on
- ``rng-<rank>.json`` + ``rng-<rank>.safetensors``  python/numpy/torch RNG states of each process
- ``trainer_state.json``     step, data position, world size, config; written last

It is written into ``.tmp-checkpoint-<step>`` and renamed into place, so a crash never leaves a
half-written ``checkpoint-*``; resume ignores ``.tmp-*`` directories.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from fourfold.nn.modeling import CheckpointError, load_safetensors_checked, read_json

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in output_dir.iterdir()
        if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> None:
    """Delete all but the ``keep_last`` newest checkpoints and any stale ``.tmp-checkpoint-*`` dirs."""
    ckpts = list_checkpoints(output_dir)
    for old in ckpts[: max(0, len(ckpts) - keep_last)]:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_temporaries(output_dir: str | Path) -> None:
    for p in Path(output_dir).glob(".tmp-checkpoint-*"):
        shutil.rmtree(p, ignore_errors=True)


# tensors <-> files


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors needs contiguous, unshared CPU tensors."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file(_contiguous(tensors), str(path))


def optimizer_state_to_files(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Split ``optimizer.state_dict()`` into tensors (safetensors) and everything else (JSON)."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    save_tensors(directory / "optimizer.safetensors", tensors)
    meta = {"param_groups": state_dict["param_groups"], "scalars": scalars}
    (directory / "optimizer.json").write_text(json.dumps(meta))


def optimizer_state_from_files(directory: Path) -> dict[str, Any]:
    tensors = load_safetensors_checked(directory / "optimizer.safetensors")
    meta = read_json(directory / "optimizer.json")
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entries in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


# random number generators


def capture_rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON part, tensor part) of the python, numpy, torch and CUDA generators of this process."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    return meta, tensors


def restore_rng_state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_rng(directory: Path, rank: int) -> None:
    meta, tensors = capture_rng_state()
    (directory / f"rng-{rank}.json").write_text(json.dumps(meta))
    save_tensors(directory / f"rng-{rank}.safetensors", tensors)


def load_rng(directory: Path, rank: int) -> bool:
    """Restore this rank's RNG state; False when the checkpoint has none for this rank."""
    meta_path = directory / f"rng-{rank}.json"
    if not meta_path.is_file():
        return False
    restore_rng_state(read_json(meta_path), load_safetensors_checked(directory / f"rng-{rank}.safetensors"))
    return True


def read_trainer_state(directory: Path) -> dict[str, Any]:
    state = read_json(directory / "trainer_state.json")
    if "step" not in state:
        raise CheckpointError(f"{directory / 'trainer_state.json'} has no 'step'")
    return state
