"""Per-tensor SaRA parametrizations: the memory-lean "unstructural" backend and the dense reference.

Each targeted tensor P (any float dtype) gets one ``torch.nn.utils.parametrize`` parametrization
(``unsafe=True``) that owns its sparse patch:

- ``indices``       (K,)  sorted flat indices of the support S0 (int32, int64 for ≥ 2^31 entries)
- ``base_values``   (K,)  fp32 copy of P0 at S0: ``unmerge`` restores it bit-exactly, never by subtraction
- ``values``        (A,)  fp32 trainable masters of the active support S_active ⊆ S0 (§4.4 (a))
- ``active_indices``(A,)  flat indices of S_active (the same tensor as ``indices`` until PPA)
- ``frozen_indices``/``frozen_values`` (K−A,)  entries PPA dropped, frozen at their fine-tuned values

:class:`SparseParametrization` (§4.4, Eqs. 6–7): the effective weight *is* the base storage. Its forward
writes ``values`` into the base only when ``values._version`` moved since the last write (so any
optimizer, foreach or fused, works without hooks) and returns an alias of the base through
:class:`_GatherGrad`, whose backward turns the transient dense dW into ``dW.flat[S_active]``. The base
parameter has ``requires_grad=False`` and never holds a ``.grad``.

:class:`MaskedDenseParametrization` is the reference (the official ``adamw2`` / LT-SFT memory class): the
base stays a trainable dense parameter, a hook zeroes its gradient outside S_active, dense optimizer state
is kept, and entries outside S_active are restored from a dense frozen copy before every use.
"""

from __future__ import annotations

import torch
from torch import nn


class _GatherGrad(torch.autograd.Function):
    """Identity on the base storage whose gradient goes to the sparse values: ``grad_values = dW.flat[S]``."""

    @staticmethod
    def forward(ctx, base: torch.Tensor, values: torch.Tensor, active_indices: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(active_indices)
        ctx.values_dtype = values.dtype
        return base.view_as(base)  # alias: no weight-sized copy in forward (§4.4 (b))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (active_indices,) = ctx.saved_tensors
        # the dense dW lives only here, inside backward, and is gathered to (A,) (§4.4 (c))
        grad_values = grad.reshape(-1).index_select(0, active_indices).to(ctx.values_dtype)
        return None, grad_values, None


class _SaraParametrization(nn.Module):
    """State shared by both backends; see the module docstring for the buffers."""

    is_sara = True

    def __init__(self, base: torch.Tensor, indices: torch.Tensor) -> None:
        super().__init__()
        if not base.is_contiguous():
            raise ValueError("SaRA needs contiguous parameters (flat indices address the storage)")
        base_values = base.detach().reshape(-1)[indices].float().clone()
        self.register_buffer("indices", indices)
        self.register_buffer("base_values", base_values)
        self.register_buffer("active_indices", indices)
        self.register_buffer("frozen_indices", indices[:0].clone())
        self.register_buffer("frozen_values", base_values[:0].clone())
        self.shape = tuple(base.shape)
        self.alpha = 1.0  # patch scale: P0 + α·Δ (App. F)
        self.enabled = True

    # sizes -----------------------------------------------------------------------------------------
    @property
    def num_support(self) -> int:
        return int(self.indices.numel())

    @property
    def num_active(self) -> int:
        return int(self.active_indices.numel())

    def _positions(self, flat: torch.Tensor) -> torch.Tensor:
        """Positions in S0 of flat indices ⊆ S0."""
        return torch.searchsorted(self.indices, flat)

    # patch values ------------------------------------------------------------------------------------
    def full_values(self, base: torch.Tensor) -> torch.Tensor:
        """(K,) fp32 fine-tuned values V at S0 (active masters + frozen entries)."""
        out = self.base_values.clone()
        out[self._positions(self.active_indices)] = self.active_values(base).detach().float()  # per backend
        if self.frozen_indices.numel():
            out[self._positions(self.frozen_indices)] = self.frozen_values
        return out

    def target_values(self, base: torch.Tensor) -> torch.Tensor:
        """(K,) values to write at S0 for the current enabled/α state; α ∈ {0, 1} are bit-exact."""
        if not self.enabled or self.alpha == 0.0:
            return self.base_values
        full = self.full_values(base)
        if self.alpha == 1.0:
            return full
        return self.base_values + self.alpha * (full - self.base_values)

    # state_dict: PPA changes sizes, so a checkpoint may hold smaller active sets than a fresh wrap ------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        for name in ("active_indices", "frozen_indices", "frozen_values", "values"):
            key = prefix + name
            own = getattr(self, name, None)
            if key in state_dict and own is not None and state_dict[key].shape != own.shape:
                if name == "values":
                    own.data = own.data.new_empty(state_dict[key].shape)
                    own.grad = None
                else:
                    setattr(self, name, own.new_empty(state_dict[key].shape))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)
        self._mark_dirty()

    def _mark_dirty(self) -> None:
        self._written = None


class SparseParametrization(_SaraParametrization):
    """Memory-lean backend: trainable ``values`` (A,) fp32; the base is written lazily and aliased."""

    def __init__(self, base: torch.Tensor, indices: torch.Tensor) -> None:
        super().__init__(base, indices)
        self.values = nn.Parameter(self.base_values.clone())
        self._written: tuple | None = None

    def active_values(self, base: torch.Tensor) -> torch.Tensor:
        return self.values

    def write(self, base: torch.Tensor) -> None:
        """Write the patch into the base storage (P0 + α·Δ on S0) and remember what was written."""
        with torch.no_grad():
            flat = base.view(-1)
            if self.enabled and self.alpha == 1.0 and self.frozen_indices.numel() == 0:
                flat[self.active_indices] = self.values.to(base.dtype)
            else:
                flat[self.indices] = self.target_values(base).to(base.dtype)
        self._written = self._state_key()

    def set_state(self, base: torch.Tensor, enabled: bool, alpha: float) -> None:
        self.enabled, self.alpha = enabled, alpha
        self.write(base)

    def _state_key(self) -> tuple:
        return (id(self.values), self.values._version, self.values.data_ptr(), self.enabled, self.alpha)

    def forward(self, base: torch.Tensor) -> torch.Tensor:
        if self._written != self._state_key():
            self.write(base)
        if not (self.enabled and self.alpha == 1.0):
            return base  # scaled / disabled: inference only, no gradient to the values
        return _GatherGrad.apply(base, self.values, self.active_indices)

    def reselect(self, threshold: float) -> torch.Tensor:
        """PPA (§4.3): keep active entries with |value| < θ; freeze the rest at their current values.

        Returns the bool keep-mask over the old active set; ``values`` becomes a new Parameter (the
        caller moves it into the optimizer).
        """
        with torch.no_grad():
            keep = self.values.detach().float().abs() < threshold
            drop = ~keep
            if drop.any():
                frozen_idx = torch.cat([self.frozen_indices, self.active_indices[drop]])
                frozen_val = torch.cat([self.frozen_values, self.values.detach()[drop].float()])
                order = torch.argsort(frozen_idx)
                self.frozen_indices = frozen_idx[order]
                self.frozen_values = frozen_val[order]
                self.active_indices = self.active_indices[keep].clone()
                # a new leaf: resizing .data in place would leave autograd's cached accumulator stale
                grad = self.values.grad
                self.values = nn.Parameter(self.values.detach()[keep].clone())
                if grad is not None:
                    self.values.grad = grad[keep].clone()
            self._written = None
        return keep


class MaskedDenseParametrization(_SaraParametrization):
    """Reference backend: dense trainable base, masked gradient, frozen entries restored before use."""

    def __init__(self, base: torch.Tensor, indices: torch.Tensor) -> None:
        super().__init__(base, indices)
        mask = torch.zeros(base.numel(), dtype=torch.bool, device=base.device)
        mask[indices] = True
        self.register_buffer("mask", mask.view(base.shape))
        self.register_buffer("frozen_ref", base.detach().clone())  # dense P0, then frozen PPA values
        self._written = None
        self._stash: torch.Tensor | None = None
        self._hook_handle = None

    def active_values(self, base: torch.Tensor) -> torch.Tensor:
        if self._stash is not None:  # scaled or disabled: the trained values are parked in the stash
            return self._stash[self._positions(self.active_indices)]
        return base.reshape(-1)[self.active_indices]

    def hook(self, base: nn.Parameter) -> None:
        """Mask the dense gradient to S_active (registered once per base tensor)."""
        if self._hook_handle is None:
            self._hook_handle = base.register_hook(lambda g: g * self.mask)

    def unhook(self) -> None:
        if self._hook_handle is not None:
            self._hook_handle.remove()
            self._hook_handle = None

    def set_state(self, base: torch.Tensor, enabled: bool, alpha: float) -> None:
        """Switch between trained (α=1), scaled and disabled; the trained values survive in a stash."""
        with torch.no_grad():
            if self._stash is None and not (enabled and alpha == 1.0):
                self._stash = base.detach().reshape(-1)[self.indices].float().clone()
            self.enabled, self.alpha = enabled, alpha
            full = self._stash if self._stash is not None else None
            if full is not None:
                if enabled and alpha == 1.0:
                    base.view(-1)[self.indices] = full.to(base.dtype)
                    self._stash = None
                elif not enabled or alpha == 0.0:
                    base.view(-1)[self.indices] = self.base_values.to(base.dtype)
                else:
                    scaled = self.base_values + alpha * (full - self.base_values)
                    base.view(-1)[self.indices] = scaled.to(base.dtype)
        self._written = base._version  # what is in the base now is intended; nothing to restore

    def forward(self, base: torch.Tensor) -> torch.Tensor:
        if self._written != base._version:
            with torch.no_grad():  # undo what a dense optimizer did outside S_active (e.g. weight decay)
                base.copy_(torch.where(self.mask, base, self.frozen_ref))
            self._written = base._version
        return base

    def reselect(self, threshold: float, base: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            cur = base.detach().reshape(-1)[self.active_indices]
            keep = cur.float().abs() < threshold
            drop = self.active_indices[~keep]
            if drop.numel():
                self.mask.view(-1)[drop] = False
                self.frozen_ref.view(-1)[drop] = cur[~keep]
                frozen_idx = torch.cat([self.frozen_indices, drop])
                frozen_val = torch.cat([self.frozen_values, cur[~keep].float()])
                order = torch.argsort(frozen_idx)
                self.frozen_indices, self.frozen_values = frozen_idx[order], frozen_val[order]
                self.active_indices = self.active_indices[keep].clone()
            self._written = None
        return keep
