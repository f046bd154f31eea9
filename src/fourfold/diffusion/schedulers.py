"""Noise schedulers by name, over diffusers' scheduler classes.

A scheduler is weight-free, so "loading" one means reading its config: from a local diffusers
``scheduler/`` directory (``scheduler_config.json``), a dict, another scheduler (e.g. switching an
Auffusion PNDM config to DDIM keeps its betas and prediction type) or plain keyword arguments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fourfold.nn import CheckpointError

__all__ = ["SCHEDULER_NAMES", "make_scheduler", "scheduler_class"]

# name -> (diffusers class name, extra config that defines the variant)
_REGISTRY: dict[str, tuple[str, dict[str, Any]]] = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "euler": ("EulerDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
}
SCHEDULER_NAMES = tuple(_REGISTRY)

# Stable Diffusion 1.5's scheduler_config.json, which Auffusion keeps (Draw an Audio spec §2.5):
# scaled-linear 0.00085 -> 0.012 over 1000 steps, no x0 clipping (latents are not bounded to [-1, 1]).
_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}
_SCHEDULE_ALIASES = {"cosine": "squaredcos_cap_v2"}


_ALIASES = {"dpmsolver": "dpm++", "dpmpp": "dpm++", "dpmsolverpp": "dpm++", "dpmppsde": "dpm++sde"}


def _canonical(name: str) -> str:
    low = name.lower()
    if low in _REGISTRY:
        return low
    key = low.replace("_", "").replace("-", "")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {list(SCHEDULER_NAMES)}")
    return key


def scheduler_class(name: str) -> type:
    """The diffusers class behind ``name`` (one of :data:`SCHEDULER_NAMES`, case-insensitive)."""
    import diffusers

    return getattr(diffusers, _REGISTRY[_canonical(name)][0])


def _read_source(source: Any) -> dict[str, Any]:
    if source is None:
        return dict(_DEFAULTS)
    if hasattr(source, "config") and hasattr(source, "set_timesteps"):  # a scheduler instance
        return dict(source.config)
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(os.fspath(source))
    if path.is_dir():
        path = path / "scheduler_config.json"
    if not path.is_file():
        raise CheckpointError(f"scheduler config not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err


def make_scheduler(name: str = "ddim", source: Any = None, **overrides: Any):
    """Build a diffusers scheduler by name.

    ``name``: ``ddpm``, ``ddim``, ``dpm++`` (DPM-Solver++ 2M), ``dpm++sde``, ``euler`` or ``pndm``.
    ``source``: ``None`` (Stable Diffusion 1.5's config: scaled-linear 0.00085→0.012, 1000 steps,
    ε-prediction, ``clip_sample=False``, ``steps_offset=1``), a
    local ``scheduler/`` directory or its JSON file, a config dict, or another scheduler instance.
    ``overrides`` replace config fields, e.g. ``prediction_type="v_prediction"``,
    ``beta_schedule="cosine"`` (alias of ``squaredcos_cap_v2``), ``clip_sample=False``.
    Keys the target class does not know (another scheduler's extras) are dropped by diffusers.
    """
    key = _canonical(name)
    cls = scheduler_class(key)
    config = _read_source(source)
    config.update(_REGISTRY[key][1])
    config.update(overrides)
    if config.get("beta_schedule") in _SCHEDULE_ALIASES:
        config["beta_schedule"] = _SCHEDULE_ALIASES[config["beta_schedule"]]
    allowed = ("epsilon", "v_prediction", "sample")
    if config.get("prediction_type", "epsilon") not in allowed:
        raise ValueError(
            f"scheduler prediction_type must be one of {allowed}, got {config['prediction_type']!r}"
        )
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    return cls.from_config(config)
