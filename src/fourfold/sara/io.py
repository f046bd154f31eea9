"""SaRA patches on disk and in memory: save, validated load, and the patch algebra of App. F–G.

Files (PEFT's names): ``adapter_config.json`` and ``adapter_model.safetensors`` holding, per tensor,
``base_model.model.<param>.sara_indices`` (int32; int64 for ≥ 2^31 entries) and ``.sara_values`` (fp32
fine-tuned values at S0), plus metadata: the SaRA config, the resolved θ and a fingerprint of the base
(shape, dtype, sha256 of P0 at S0) so that loading into the wrong base names the tensor that differs.
Nothing is pickled; loading validates everything before it touches the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from fourfold.nn.modeling import CheckpointError, atomic_write_dir
from fourfold.sara.config import SaraConfig

if TYPE_CHECKING:
    from fourfold.sara.handle import SaraHandle

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
FORMAT = "fourfold-sara/1"


def base_fingerprint(base_values: torch.Tensor) -> str:
    """sha256 of P0 at S0 as little-endian fp32 bytes."""
    return hashlib.sha256(base_values.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


@dataclass
class _Term:
    weight: float
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]  # name → (idx, V, P0|None)
    fingerprint: dict[str, dict] = field(default_factory=dict)  # name → {shape, dtype, base_sha256}


@dataclass
class SaraDelta:
    """Σ_k α_k·Δ_k over the union of supports, Δ_k = V_k − P0 (App. G); one term for a single patch."""

    terms: list[_Term]

    @classmethod
    def from_handle(cls, handle: SaraHandle) -> SaraDelta:
        tensors, fp = {}, {}
        for e in handle.entries:
            p = e.param
            tensors[e.name] = (
                p.indices.clone(),
                p.full_values(e.base).detach().clone(),
                p.base_values.clone(),
            )
            fp[e.name] = _fingerprint_entry(p.shape, e.base.dtype, p.base_values)
        return cls([_Term(1.0, tensors, fp)])

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> SaraDelta:
        """A saved adapter as a delta (P0 is read from the model it is applied to, checked by fingerprint)."""
        tensors, meta = read_adapter(directory)
        return cls([_Term(1.0, {n: (i, v, None) for n, (i, v) in tensors.items()}, meta["fingerprint"])])

    def apply_to(self, model: nn.Module, alpha: float = 1.0) -> nn.Module:
        """Write P0 + α·Σ w_k Δ_k into an unwrapped base ``model`` (checked to be the base first)."""
        params = dict(model.named_parameters())
        names = sorted({n for t in self.terms for n in t.tensors})
        for n in names:  # validate everything before writing anything
            if n not in params:
                raise CheckpointError(f"SaraDelta.apply_to: model has no parameter {n!r}")
            for t in self.terms:
                if n in t.tensors:
                    _check_base(n, params[n], t.tensors[n][0], t.tensors[n][2], t.fingerprint.get(n))
        with torch.no_grad():
            for n in names:
                flat = params[n].data.view(-1)
                parts = [(t.weight * alpha, *t.tensors[n]) for t in self.terms if n in t.tensors]
                if len(parts) == 1 and parts[0][0] == 1.0:
                    flat[parts[0][1]] = parts[0][2].to(flat.dtype)  # bit-exact V
                    continue
                union = torch.unique(torch.cat([p[1].long() for p in parts]))
                p0_union = flat[union].float()
                out = p0_union.clone()
                for w, idx, v, _ in parts:
                    pos = torch.searchsorted(union, idx.long())
                    out[pos] += w * (v - p0_union[pos])
                flat[union] = out.to(flat.dtype)
        return model


def combine(deltas: Sequence[SaraDelta], weights: Sequence[float] | None = None) -> SaraDelta:
    """P0 + Σ α_k Δ_k over the union of supports (App. G uses α1 = α2 = 0.6)."""
    if not deltas:
        raise ValueError("combine: need at least one delta")
    weights = list(weights) if weights is not None else [1.0] * len(deltas)
    if len(weights) != len(deltas):
        raise ValueError(f"combine: {len(deltas)} deltas but {len(weights)} weights")
    terms = [
        dataclasses.replace(t, weight=t.weight * w)
        for d, w in zip(deltas, weights, strict=True)
        for t in d.terms
    ]
    return SaraDelta(terms)


def _fingerprint_entry(shape, dtype: torch.dtype, base_values: torch.Tensor) -> dict:
    return {
        "shape": list(shape),
        "dtype": str(dtype).removeprefix("torch."),
        "base_sha256": base_fingerprint(base_values),
    }


def _check_base(
    name: str, param: torch.Tensor, idx: torch.Tensor, p0: torch.Tensor | None, fp: dict | None
) -> None:
    if fp is not None and list(param.shape) != list(fp["shape"]):
        raise CheckpointError(
            f"base model does not match the adapter at {name!r}: shape {tuple(param.shape)} vs {tuple(fp['shape'])}"
        )
    numel = param.numel()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= numel):
        raise CheckpointError(f"adapter indices of {name!r} fall outside a tensor of {numel} entries")
    current = param.detach().reshape(-1)[idx.long()].float()
    if p0 is not None:
        ok = torch.equal(current, p0.float())
    elif fp is not None and fp.get("base_sha256"):
        ok = base_fingerprint(current) == fp["base_sha256"]
    else:
        ok = True
    if not ok:
        raise CheckpointError(
            f"base model does not match the adapter at {name!r}: its values on the adapter's support differ "
            "from the base the adapter was trained on (wrong model, or an adapter already applied)"
        )


# files ---------------------------------------------------------------------------------------------


def save_adapter(handle: SaraHandle, directory: str | Path) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` atomically."""
    handle.sync()
    tensors: dict[str, torch.Tensor] = {}
    fingerprint: dict[str, dict] = {}
    for e in handle.entries:
        p = e.param
        tensors[f"{PREFIX}{e.name}.sara_indices"] = p.indices.detach().cpu().contiguous().clone()
        tensors[f"{PREFIX}{e.name}.sara_values"] = p.full_values(e.base).detach().float().cpu().contiguous()
        fingerprint[e.name] = _fingerprint_entry(p.shape, e.base.dtype, p.base_values)
    cfg = handle.config.to_dict()
    meta = {
        "format": FORMAT,
        "threshold": repr(float(handle.threshold)),
        "sara_config": json.dumps(cfg, sort_keys=True),
        "fingerprint": json.dumps(fingerprint, sort_keys=True),
    }
    adapter_config = {
        "peft_type": "SARA",
        "format": FORMAT,
        "threshold": float(handle.threshold),
        "num_support": handle.num_support(),
        "num_active": handle.num_trainable(),
        "num_tensors": len(handle.entries),
        "sara_config": cfg,
    }

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata=meta)
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2, sort_keys=True))

    return atomic_write_dir(directory, write)


def read_adapter(directory: str | Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict]:
    """Read and validate the file's structure: {name: (indices, values)} and metadata (config, θ, fingerprint)."""
    path = Path(directory) / ADAPTER_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"missing SaRA adapter file: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw_meta = f.metadata() or {}
            raw = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"corrupt or truncated SaRA adapter {path}: {err}") from err
    if raw_meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fourfold SaRA adapter (format={raw_meta.get('format')!r})")
    try:
        meta = {
            "threshold": float(raw_meta["threshold"]),
            "config": SaraConfig.from_dict(json.loads(raw_meta["sara_config"])),
            "fingerprint": json.loads(raw_meta["fingerprint"]),
        }
    except (KeyError, ValueError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: bad SaRA metadata: {err}") from err
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in raw:
        if not key.startswith(PREFIX) or not key.endswith((".sara_indices", ".sara_values")):
            raise CheckpointError(f"{path}: unexpected tensor {key!r}")
    for name in meta["fingerprint"]:
        ik, vk = f"{PREFIX}{name}.sara_indices", f"{PREFIX}{name}.sara_values"
        if ik not in raw or vk not in raw:
            raise CheckpointError(f"{path}: missing indices or values of {name!r}")
        idx, val = raw[ik], raw[vk]
        if idx.dtype not in (torch.int32, torch.int64) or idx.dim() != 1:
            raise CheckpointError(
                f"{path}: {ik} must be a 1-D int32/int64 tensor, got {idx.dtype} {tuple(idx.shape)}"
            )
        if val.dtype != torch.float32 or val.shape != idx.shape:
            raise CheckpointError(
                f"{path}: {vk} must be fp32 of shape {tuple(idx.shape)}, got {val.dtype} {tuple(val.shape)}"
            )
        if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
            raise CheckpointError(f"{path}: {ik} is not strictly increasing")
        numel = math.prod(meta["fingerprint"][name]["shape"])
        if idx.numel() and (int(idx[0]) < 0 or int(idx[-1]) >= numel):
            raise CheckpointError(f"{path}: {ik} out of range for {numel} entries")
        tensors[name] = (idx, val)
    if len(raw) != 2 * len(tensors):
        raise CheckpointError(f"{path}: tensors without a fingerprint entry")
    return tensors, meta


def load(
    base_model: nn.Module, directory: str | Path, *, check_base: bool = True, backend: str | None = None
) -> SaraHandle:
    """Wrap ``base_model`` (freshly built, at P0) with a saved patch; the result equals the fine-tuned model.

    Everything is validated (file structure, parameter names and shapes, base fingerprint per tensor)
    before the model is touched. ``check_base=False`` skips the P0 fingerprint (e.g. another dtype).
    """
    from fourfold.sara.handle import wrap

    tensors, meta = read_adapter(directory)
    params = dict(base_model.named_parameters())
    for name, (idx, _) in tensors.items():
        if name not in params:
            raise CheckpointError(f"base model does not match the adapter: no parameter {name!r}")
        fp = meta["fingerprint"][name]
        _check_base(name, params[name], idx, None, fp if check_base else dict(fp, base_sha256=None))
    cfg: SaraConfig = meta["config"]
    overrides = {"threshold": meta["threshold"], "fraction": None, "include": [".*"], "exclude": []}
    if backend is not None:
        overrides["backend"] = backend
    cfg = dataclasses.replace(cfg, **overrides)
    handle = wrap(base_model, cfg, indices={n: i for n, (i, _) in tensors.items()})
    with torch.no_grad():
        for e in handle.entries:
            vals = tensors[e.name][1].to(e.base.device)
            if cfg.backend == "sparse":
                e.param.values.copy_(vals)
            else:
                e.base.view(-1)[e.param.indices] = vals.to(e.base.dtype)
    handle.sync()
    return handle


def import_official(
    base_model: nn.Module, path: str | Path, threshold: float, **config: object
) -> SaraHandle:
    """Load a checkpoint of the official code (``torch.save(optimizer.save_params(), path)``).

    That file is ``{position: values}``: for the i-th tensor of ``base_model.parameters()``, the values at
    ``|P0| < θ`` in flat order, without indices (official defect 7), so the supports are re-derived from
    this base with the same θ; a count mismatch names the tensor. Read with ``weights_only=True``.
    Returns a handle whose weights are the official fine-tuned ones.
    """
    from fourfold.sara.handle import wrap

    try:
        saved = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt/pickled-object files
        raise CheckpointError(f"cannot read official SaRA checkpoint {path}: {err}") from err
    if not isinstance(saved, dict) or not all(isinstance(k, int) for k in saved):
        raise CheckpointError(
            f"{path}: expected {{int position: tensor}} as written by the official save_params()"
        )
    named = list(base_model.named_parameters())
    indices, values = {}, {}
    for pos, (name, p) in enumerate(named):
        idx = torch.nonzero(p.detach().reshape(-1).float().abs() < threshold).reshape(-1)
        got = saved.get(pos)
        n_got = 0 if got is None else got.numel()
        if n_got != idx.numel():
            raise CheckpointError(
                f"{path}: tensor {pos} ({name}) has {n_got} values, |w| < {threshold:g} selects {idx.numel()}"
            )
        if idx.numel():
            indices[name], values[name] = idx, got.reshape(-1).float()
    cfg = SaraConfig(threshold=threshold, **config)  # type: ignore[arg-type]
    handle = wrap(base_model, cfg, indices=indices)
    with torch.no_grad():
        for e in handle.entries:
            if cfg.backend == "sparse":
                e.param.values.copy_(values[e.name])
            else:
                e.base.view(-1)[e.param.indices] = values[e.name].to(e.base.dtype)
    handle.sync()
    return handle
