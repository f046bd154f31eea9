"""Per-tensor SaRA parametrizations: the memory-lean "unstructural" backend and the dense reference.

Each targeted tensor P (any float dtype) gets one ``torch.nn.utils.parametrize`` parametrization
(``unsafe=True``) that owns its sparse patch, all buffers of fixed size K = |S0|:

- ``indices``     (K,)  sorted flat indices of the support S0 (int32, int64 for ≥ 2^31 entries)
- ``base_values`` (K,)  fp32 copy of P0 at S0: ``unmerge`` restores it bit-exactly, never by subtraction
- ``active``      (K,)  bool, S_active ⊆ S0 (all True until progressive re-selection, §4.3)
- ``values``      (K,)  fp32 trainable masters (sparse backend only, §4.4 (a))

:class:`SparseParametrization` (§4.4, Eqs. 6–7): the effective weight *is* the base storage. Its forward
writes ``values`` into the base only when ``values._version`` moved since the last write (so any
optimizer, foreach or fused, works without hooks) and returns an alias of the base through
:class:`_GatherGrad`, whose backward turns the transient dense dW into ``dW.flat[S0]`` (zeroed where
PPA froze an entry). The base parameter has ``requires_grad=False`` and never holds a ``.grad``.

:class:`MaskedDenseParametrization` is the reference (the official ``adamw2`` / LT-SFT memory class): the
base stays a trainable dense parameter, a hook zeroes its gradient outside S_active, dense optimizer state
is kept, and entries outside S_active are restored from a dense frozen copy before every use.
"""

from __future__ import annotations

import torch
from torch import nn


class _GatherGrad(torch.autograd.Function):
    """Identity on the base storage whose gradient goes to the sparse values: ``grad_values = dW.flat[S0]``
    (zero where PPA froze the entry)."""

    @staticmethod
    def forward(ctx, base, values, indices, active):
        ctx.save_for_backward(indices, active if active is not None else indices[:0])
        ctx.has_dropped = active is not None
        ctx.values_dtype = values.dtype
        return base.view_as(base)  # alias: no weight-sized copy in forward (§4.4 (b))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        indices, active = ctx.saved_tensors
        # the dense dW lives only here, inside backward, and is gathered to (K,) (§4.4 (c))
        grad_values = grad.reshape(-1).index_select(0, indices).to(ctx.values_dtype)
        if ctx.has_dropped:
            grad_values = grad_values.masked_fill(~active, 0.0)
        return None, grad_values, None, None


class _SaraParametrization(nn.Module):
    """State shared by both backends; see the module docstring for the buffers.

    All buffers keep their size for the whole run (PPA only flips ``active``), so parameter identity,
    optimizer state shapes and ``state_dict`` shapes never change: any optimizer, Trainer checkpoint,
    EMA or gradient clipping set up before PPA stays valid after it.
    """

    is_sara = True

    def __init__(self, base: torch.Tensor, indices: torch.Tensor) -> None:
        super().__init__()
        if not base.is_contiguous():
            raise ValueError("SaRA needs contiguous parameters (flat indices address the storage)")
        self.register_buffer("indices", indices)
        self.register_buffer("base_values", base.detach().reshape(-1)[indices].float().clone())
        self.register_buffer("active", torch.ones(indices.numel(), dtype=torch.bool, device=indices.device))
        self.shape = tuple(base.shape)
        self.alpha = 1.0  # patch scale: P0 + α·Δ (App. F)
        self.enabled = True
        self._written = None

    @property
    def num_support(self) -> int:
        return int(self.indices.numel())

    @property
    def num_active(self) -> int:
        return int(self.active.sum())

    @property
    def has_dropped(self) -> bool:
        return not bool(self.active.all())

    @property
    def active_indices(self) -> torch.Tensor:
        return self.indices[self.active]

    @property
    def frozen_indices(self) -> torch.Tensor:
        return self.indices[~self.active]

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._written = None
        self._base_holds_patch = True  # a checkpoint's base was saved holding the patch


class SparseParametrization(_SaraParametrization):
    """Memory-lean backend: trainable ``values`` (K,) fp32; the base is written lazily and aliased.

    After PPA the dropped entries keep their slot in ``values`` but get zero gradient and are pinned:
    each write copies them back from the base storage (which holds them and is never written there
    again), so an optimizer's momentum or weight decay cannot move them.
    """

    def __init__(self, base: torch.Tensor, indices: torch.Tensor) -> None:
        super().__init__(base, indices)
        self.values = nn.Parameter(self.base_values.clone())
        self._base_holds_patch = False

    def full_values(self, base: torch.Tensor) -> torch.Tensor:
        """(K,) fp32 fine-tuned values V at S0 (trainable and PPA-frozen entries)."""
        if self.enabled and self.alpha == 1.0 and self._written != self._state_key():
            self.write(base)
        return self.values.detach().clone()

    def write(self, base: torch.Tensor) -> None:
        """Write the patch into the base storage (P0 + α·Δ on S0) and remember what was written."""
        with torch.no_grad():
            flat = base.view(-1)
            if self.enabled and self.alpha == 1.0:
                if self.has_dropped and self._base_holds_patch:
                    drop = ~self.active
                    self.values[drop] = flat[self.indices[drop]].float()  # pin PPA-frozen entries
                    flat[self.indices[self.active]] = self.values[self.active].to(base.dtype)
                else:
                    flat[self.indices] = self.values.to(base.dtype)
                self._base_holds_patch = True
            else:
                if self._base_holds_patch and self.has_dropped:
                    drop = ~self.active
                    self.values[drop] = flat[self.indices[drop]].float()
                if not self.enabled or self.alpha == 0.0:
                    target = self.base_values
                else:
                    target = self.base_values + self.alpha * (self.values - self.base_values)
                flat[self.indices] = target.to(base.dtype)
                self._base_holds_patch = False
        self._written = self._state_key()

    def set_state(self, base: torch.Tensor, enabled: bool, alpha: float) -> None:
        if self._written != self._state_key():
            self.write(base)  # settle pending optimizer updates under the old state first
        self.enabled, self.alpha = enabled, alpha
        self.write(base)

    def _state_key(self) -> tuple:
        return (self.values._version, self.values.data_ptr(), self.enabled, self.alpha)

    def forward(self, base: torch.Tensor) -> torch.Tensor:
        if self._written != self._state_key():
            self.write(base)
        if not (self.enabled and self.alpha == 1.0):
            return base  # scaled / disabled: inference only, no gradient to the values
        active = self.active if self.has_dropped else None
        return _GatherGrad.apply(base, self.values, self.indices, active)

    def masked_flat(self, base: torch.Tensor | None = None) -> torch.Tensor:
        """P_S flattened: trainable values in place, zeros elsewhere (differentiable w.r.t. ``values``)."""
        vals = self.values * self.active if self.has_dropped else self.values
        return vals.new_zeros(int(torch.Size(self.shape).numel())).index_put((self.indices.long(),), vals)

    def reselect(self, threshold: float, base: torch.Tensor) -> torch.Tensor:
        """PPA (§4.3): keep active entries with |value| < θ; the rest freeze at their current values.

        Returns the new ``active`` mask over S0.
        """
        if self._written != self._state_key():
            self.write(base)
        with torch.no_grad():
            self.active &= self.values.detach().abs() < threshold
            if self.values.grad is not None:
                self.values.grad.masked_fill_(~self.active, 0.0)
        self._written = None
        return self.active


class MaskedDenseParametrization(_SaraParametrization):
    """Reference backend: dense trainable base, masked gradient, frozen entries restored before use."""

    def __init__(self, base: torch.Tensor, indices: torch.Tensor) -> None:
        super().__init__(base, indices)
        mask = torch.zeros(base.numel(), dtype=torch.bool, device=base.device)
        mask[indices] = True
        self.register_buffer("mask", mask.view(base.shape))
        self.register_buffer("frozen_ref", base.detach().clone())  # dense P0, then frozen PPA values
        self._stash: torch.Tensor | None = None
        self._hook_handle = None

    def full_values(self, base: torch.Tensor) -> torch.Tensor:
        """(K,) fp32 fine-tuned values at S0 (parked in the stash while scaled or disabled)."""
        if self._stash is not None:
            return self._stash.clone()
        self.forward(base)
        return base.detach().reshape(-1)[self.indices].float().clone()

    def masked_flat(self, base: torch.Tensor) -> torch.Tensor:
        """P_S flattened: the trainable entries of the base in place, zeros elsewhere."""
        self.forward(base)
        return (base.float() * self.mask).reshape(-1)

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
        """PPA: as the sparse backend, with the dense mask and frozen copy updated."""
        self.forward(base)
        with torch.no_grad():
            cur = base.detach().reshape(-1)[self.indices].float()
            keep = self.active & (cur.abs() < threshold)
            drop = self.indices[self.active & ~keep].long()
            self.mask.view(-1)[drop] = False
            self.frozen_ref.view(-1)[drop] = base.detach().reshape(-1)[drop]
            self.active.copy_(keep)
        self._written = None
        return self.active
