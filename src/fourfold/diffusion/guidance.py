"""Classifier-free guidance over any number of nested conditions, and the sampling loop.

Chained guidance (Ho & Salimans 2022, generalised as in InstructPix2Pix, Brooks et al. 2023, Eq. 3):
given branches ``c_0 ⊂ c_1 ⊂ ... ⊂ c_K`` (``c_0`` unconditional, each adding one condition) and scales
``s_1..s_K``::

    ε̂ = ε(c_0) + Σ_k s_k · (ε(c_k) - ε(c_{k-1}))

- ``K = 1``: ordinary CFG, ``ε(∅) + s·(ε(c) - ε(∅))`` ("joint");
- ``K = 2`` with (∅, video, video+text): Draw an Audio's dual CFG (spec §2.6),
  ``ε(∅,∅) + s_v·[ε(v,∅) - ε(∅,∅)] + s_t·[ε(v,t) - ε(v,∅)]``; ``s_v = s_t = s`` telescopes to joint CFG.

All branches run as one batched forward (``(K+1)·B``) by concatenating their keyword arguments.
A branch is a dict of the model's keyword arguments, e.g.
``{"encoder_hidden_states": text, "cross_attention_kwargs": {"extra_tokens": video}}``; every branch
must give the same keys (use zeros, not ``None``, for a dropped condition).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from fourfold.diffusion.training import call_model

__all__ = ["combine_guidance", "concat_branches", "dual_cfg", "guided_prediction", "joint_cfg", "sample"]


def combine_guidance(predictions: Sequence[torch.Tensor], scales: Sequence[float]) -> torch.Tensor:
    """``ε(c_0) + Σ_k s_k (ε(c_k) - ε(c_{k-1}))`` for ``K + 1`` predictions and ``K`` scales."""
    if len(predictions) != len(scales) + 1:
        raise ValueError(
            f"{len(predictions)} branch predictions need {len(predictions) - 1} scales, got {len(scales)}"
        )
    out = predictions[0]
    for k, scale in enumerate(scales, start=1):
        out = out + scale * (predictions[k] - predictions[k - 1])
    return out


def joint_cfg(uncond: Mapping, cond: Mapping, scale: float) -> tuple[list[Mapping], list[float]]:
    """Branches and scales for ordinary CFG: ``ε(∅) + s·(ε(c) - ε(∅))``."""
    return [uncond, cond], [scale]


def dual_cfg(
    uncond: Mapping, first: Mapping, both: Mapping, scale_first: float, scale_second: float
) -> tuple[list[Mapping], list[float]]:
    """Branches and scales for dual CFG: ``ε(∅) + s_1·[ε(c_1) - ε(∅)] + s_2·[ε(c_1,c_2) - ε(c_1)]``.

    Draw an Audio: ``first`` = video only (zero text), ``both`` = video + text, ``s_1 = s_v``, ``s_2 = s_t``.
    """
    return [uncond, first, both], [scale_first, scale_second]


def _concat(values: Sequence[Any], key: str) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor):
        if not all(isinstance(v, torch.Tensor) for v in values):
            raise ValueError(
                f"guidance branches disagree on {key!r}: a tensor in one, {[type(v).__name__ for v in values]}"
            )
        return torch.cat(list(values), dim=0)
    if isinstance(first, Mapping):
        keys = set(first)
        if any(set(v) != keys for v in values):
            raise ValueError(
                f"guidance branches give different keys under {key!r}: {[sorted(v) for v in values]}"
            )
        return {k: _concat([v[k] for v in values], f"{key}.{k}") for k in first}
    if any(v is not first and v != first for v in values):
        raise ValueError(
            f"guidance branches give different non-tensor values for {key!r}; use tensors (zeros for a dropped condition)"
        )
    return first


def concat_branches(branches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge branch kwargs into one batched call: tensors concatenate on dim 0, nested dicts recurse,
    other values must be equal across branches."""
    if not branches:
        raise ValueError("at least one guidance branch is needed")
    keys = set(branches[0])
    if any(set(b) != keys for b in branches):
        raise ValueError(f"guidance branches give different keys: {[sorted(b) for b in branches]}")
    return {k: _concat([b[k] for b in branches], k) for k in branches[0]}


def guided_prediction(
    model: Callable,
    x: torch.Tensor,
    t: torch.Tensor | int | float,
    branches: Sequence[Mapping[str, Any]],
    scales: Sequence[float],
    *,
    batched: bool = True,
) -> torch.Tensor:
    """Guided model output for latents ``x`` ``(batch, ...)`` at timestep ``t``.

    ``batched`` runs all branches as one ``(len(branches)·batch, ...)`` forward; otherwise one forward
    per branch (less memory). One branch and no scales is plain conditional prediction.
    """
    if len(branches) != len(scales) + 1:
        raise ValueError(f"{len(branches)} branches need {len(branches) - 1} scales, got {len(scales)}")
    n = len(branches)
    if n == 1:
        return call_model(model, x, _expand_t(t, x.shape[0], x.device), branches[0])
    if batched:
        xs = torch.cat([x] * n, dim=0)
        out = call_model(model, xs, _expand_t(t, xs.shape[0], x.device), concat_branches(branches))
        predictions = list(out.chunk(n, dim=0))
    else:
        tt = _expand_t(t, x.shape[0], x.device)
        predictions = [call_model(model, x, tt, b) for b in branches]
    return combine_guidance(predictions, scales)


def _expand_t(t: torch.Tensor | int | float, batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device)
    return t.reshape(1).expand(batch) if t.ndim == 0 else t


@torch.no_grad()
def sample(
    model: Callable,
    scheduler,
    branches: Sequence[Mapping[str, Any]],
    scales: Sequence[float] = (),
    *,
    latents: torch.Tensor | None = None,
    shape: Sequence[int] | None = None,
    num_inference_steps: int = 25,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    batched: bool = True,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Denoise from noise with guidance; returns the final latents ``(batch, ...)``.

    Start: ``latents`` (already noise) or ``shape`` drawn from ``generator`` and scaled by the scheduler's
    ``init_noise_sigma``. Each of ``num_inference_steps`` steps: ``scale_model_input``, the guided
    prediction over ``branches``/``scales`` (see the module docstring), ``scheduler.step`` (with ``eta``
    and ``generator`` where the scheduler takes them). ``callback(i, t, latents)`` after each step.
    """
    if latents is None:
        if shape is None:
            raise ValueError("give either latents or shape")
        noise_device = generator.device if generator is not None else "cpu"
        latents = torch.randn(tuple(shape), generator=generator, device=noise_device, dtype=dtype)
        latents = latents.to(device or noise_device) * scheduler.init_noise_sigma
    scheduler.set_timesteps(num_inference_steps, device=latents.device)
    params = set(inspect.signature(scheduler.step).parameters)
    step_kwargs = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in params}
    steps = scheduler.timesteps
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="sampling")
    for i, t in enumerate(steps):
        model_input = scheduler.scale_model_input(latents, t)
        pred = guided_prediction(model, model_input, t, branches, scales, batched=batched)
        latents = scheduler.step(pred, t, latents, **step_kwargs).prev_sample
        if callback is not None:
            callback(i, t, latents)
    return latents
