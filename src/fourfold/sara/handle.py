"""``sara.wrap(model, config)``: turn any ``nn.Module`` into a SaRA fine-tuning target (§4).

The model is modified in place (same object): every targeted tensor with a non-empty support gets a
parametrization from :mod:`fourfold.sara.sparse`; every other parameter is frozen. The returned
:class:`SaraHandle` gives the trainable tensors, the low-rank loss, progressive re-selection, patch
algebra (merge / unmerge / scale) and saving.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from fourfold.sara.config import SaraConfig
from fourfold.sara.selection import index_dtype, resolve_fraction, select_indices
from fourfold.sara.sparse import MaskedDenseParametrization, SparseParametrization

RANK_SEED_STRIDE = 1_000_003  # decorrelates the per-step draws of the rank-loss sampler


@dataclass
class _Entry:
    name: str  # original parameter name, e.g. "down_blocks.0.resnets.0.conv1.weight"
    module: nn.Module
    attr: str

    @property
    def plist(self) -> Any:
        return self.module.parametrizations[self.attr]

    @property
    def param(self) -> SparseParametrization | MaskedDenseParametrization:
        return self.plist[0]

    @property
    def base(self) -> nn.Parameter:
        return self.plist.original


def _split(name: str) -> tuple[str, str]:
    mod, _, attr = name.rpartition(".")
    return mod, attr


def _targets(model: nn.Module, config: SaraConfig) -> list[tuple[str, nn.Parameter]]:
    """Named float parameters passing include/exclude; tied parameters are skipped with a warning."""
    seen: dict[int, str] = {}
    tied: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.add(id(p))
        seen.setdefault(id(p), name)
    out = []
    for name, p in model.named_parameters():
        if "parametrizations." in name:
            raise ValueError(f"sara.wrap: {name} is already parametrized (is the model already wrapped?)")
        if not p.is_floating_point() or not config.targets(name):
            continue
        if id(p) in tied:
            warnings.warn(f"sara.wrap: {name} is tied to another module and is left frozen", stacklevel=3)
            continue
        out.append((name, p))
    return out


def _checked_indices(name: str, idx: torch.Tensor, numel: int) -> torch.Tensor:
    if idx.dim() != 1 or idx.is_floating_point():
        raise ValueError(f"sara.wrap: indices of {name} must be a 1-D integer tensor")
    if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
        raise ValueError(f"sara.wrap: indices of {name} must be sorted and unique")
    if int(idx[0]) < 0 or int(idx[-1]) >= numel:
        raise ValueError(f"sara.wrap: indices of {name} fall outside its {numel} entries")
    return idx.to(index_dtype(numel))


def wrap(
    model: nn.Module, config: SaraConfig, *, indices: dict[str, torch.Tensor] | None = None
) -> SaraHandle:
    """Select the entries |w| < θ over every targeted tensor and make only them trainable (§4.1).

    ``indices`` ({parameter name: sorted flat indices}) gives the supports instead of selecting them
    (used by :func:`fourfold.sara.load` and by ablations such as largest-|w| or random entries).
    """
    targets = _targets(model, config)
    if not targets:
        raise ValueError("sara.wrap: no parameter matches SaraConfig.include/exclude")
    if indices is not None:
        threshold = float(config.threshold) if config.threshold is not None else float("nan")
        if config.threshold is None and config.progressive_at is not None:
            raise ValueError("sara.wrap: explicit indices in fraction mode leave no θ for PPA; "
                             "give SaraConfig.threshold or progressive_at=None")  # fmt: skip
        unknown = sorted(set(indices) - {n for n, _ in targets})
        if unknown:
            raise ValueError(f"sara.wrap: indices given for unknown or untargeted parameters {unknown[:5]}")
    elif config.threshold is not None:
        threshold = float(config.threshold)
    else:
        threshold = resolve_fraction([p for _, p in targets], config.fraction)
    plan = []  # validate and select everything before the model is touched
    for name, p in targets:
        idx = indices.get(name) if indices is not None else select_indices(p, threshold)
        if idx is None or idx.numel() == 0:
            continue  # empty support: untouched, no dW computed
        if indices is not None:
            idx = _checked_indices(name, idx, p.numel())
        plan.append((name, p, idx))
    if not plan:
        raise ValueError(f"sara.wrap: no entry has |w| < θ={threshold:g}; raise the threshold")
    handle = SaraHandle(model, config, threshold)
    for name, p in model.named_parameters():
        handle._requires_grad[name] = p.requires_grad
        p.requires_grad_(False)
    cls = SparseParametrization if config.backend == "sparse" else MaskedDenseParametrization
    modules = dict(model.named_modules())
    for name, p, idx in plan:
        mod_name, attr = _split(name)
        module = modules[mod_name]
        pm = cls(p, idx.to(p.device))
        if config.backend == "masked_dense":
            p.requires_grad_(True)
            pm.hook(p)
        handle._param_order.setdefault(id(module), list(module._parameters))
        parametrize.register_parametrization(module, attr, pm, unsafe=True)
        handle.entries.append(_Entry(name, module, attr))
    return handle


class SaraHandle:
    """The live SaRA adapter on a model (PEFT-shaped). Create it with :func:`wrap` or :func:`load`."""

    def __init__(self, model: nn.Module, config: SaraConfig, threshold: float) -> None:
        self.model = model
        self.config = config
        self.threshold = threshold  # the resolved θ, reused by PPA (§4.3)
        self.entries: list[_Entry] = []
        self.step = 0  # optimizer steps seen by on_step
        self.rank_draws = 0  # rank-loss calls so far (drives the one_random sampler)
        self.ppa_done: list[int] = []
        self._requires_grad: dict[str, bool] = {}
        self._param_order: dict[int, list[str]] = {}  # module id → original parameter order (state_dict keys)
        self._unloaded = False

    # trainable tensors -------------------------------------------------------------------------------
    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        self._check_live()
        if self.config.backend == "sparse":
            return [(e.name, e.param.values) for e in self.entries]
        return [(e.name, e.base) for e in self.entries]

    def parameters(self) -> list[nn.Parameter]:
        """The only trainable tensors: (A_t,) fp32 values per tensor (dense bases for masked_dense)."""
        return [p for _, p in self.named_parameters()]

    def learning_rate(self) -> float:
        """Explicit ``config.lr`` or the paper's Eq. 12 at the resolved θ."""
        return self.config.learning_rate(self.threshold)

    def num_support(self) -> int:
        return sum(e.param.num_support for e in self.entries)

    def num_trainable(self) -> int:
        return sum(e.param.num_active for e in self.entries)

    # low-rank constraint (§4.2) ----------------------------------------------------------------------
    def _rank_matrix(self, e: _Entry) -> torch.Tensor | None:
        shape = e.param.shape
        if len(shape) == 2:
            rows, cols = shape
        elif len(shape) == 4 and self.config.rank_conv:
            rows, cols = shape[0], shape[1] * shape[2] * shape[3]
        else:
            return None
        if min(rows, cols) <= self.config.rank_min_dim:
            return None
        return torch.Size((rows, cols))

    def rank_eligible(self) -> list[str]:
        return [e.name for e in self.entries if self._rank_matrix(e) is not None]

    def masked_matrix(self, name: str) -> torch.Tensor:
        """P_S: the trainable entries of tensor ``name`` in place, zeros elsewhere, as an fp32 matrix."""
        e = next(x for x in self.entries if x.name == name)
        mat = self._rank_matrix(e) or torch.Size((e.param.shape[0], -1))
        return e.param.masked_flat(e.base).reshape(mat)

    def rank_loss(self, draw: int | None = None) -> torch.Tensor:
        """λ_rank·‖P_S‖_* (Eqs. 4–5); add it to the loss once per optimizer step.

        ``one_random`` draws one eligible tensor uniformly (official default), seeded by ``config.seed``
        and the draw number: the internal counter, or ``draw`` when given (e.g. the optimizer step, so
        every micro-batch of an accumulated step and a resumed run pick the same tensor). ``all`` sums
        over every eligible tensor.
        """
        self._check_live()
        eligible = self.rank_eligible()
        device = self.entries[0].base.device
        if draw is None:
            draw = self.rank_draws
            self.rank_draws += 1
        if self.config.lambda_rank == 0.0 or not eligible:
            return torch.zeros((), device=device)
        if self.config.rank_sampling == "one_random":
            gen = torch.Generator().manual_seed(self.config.seed * RANK_SEED_STRIDE + int(draw))
            eligible = [eligible[int(torch.randint(len(eligible), (1,), generator=gen))]]
        total = sum(torch.linalg.matrix_norm(self.masked_matrix(n), ord="nuc") for n in eligible)
        return self.config.lambda_rank * total

    # progressive parameter adjustment (§4.3) ---------------------------------------------------------
    def on_step(self, optimizer: torch.optim.Optimizer | None, step: int, total_steps: int) -> bool:
        """Call after each optimizer step (1-based ``step``); runs PPA when due. Returns whether it did."""
        self.step = step
        if step in self.config.ppa_steps(total_steps) and step not in self.ppa_done:
            self.progressive_reselect(optimizer)
            self.ppa_done.append(step)
            return True
        return False

    def progressive_reselect(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """S_active ← {i ∈ S_active : |P_i| < θ}; dropped entries freeze at their fine-tuned values.

        Tensors keep their sizes, so the optimizer needs no surgery: survivors keep their Adam moments
        (our default; the step's gradient was already applied), dropped entries get zero gradient and are
        pinned. With ``progressive_reset_state`` the optimizer state is cleared (the official behaviour).
        """
        self._check_live()
        self.sync()
        for e in self.entries:
            e.param.reselect(self.threshold, e.base)
            if optimizer is not None and self.config.progressive_reset_state:
                target = e.param.values if self.config.backend == "sparse" else e.base
                optimizer.state.pop(target, None)
        self.sync()

    # patch algebra (App. F) --------------------------------------------------------------------------
    def sync(self) -> None:
        """Force every pending value write into the base storage (normally done lazily in forward)."""
        self._check_live()
        for e in self.entries:
            getattr(e.module, e.attr)

    def _set(self, enabled: bool, alpha: float) -> None:
        self._check_live()
        for e in self.entries:
            e.param.set_state(e.base, enabled, alpha)

    def scale(self, alpha: float) -> None:
        """Weights become P0 + α·Δ on S0 (α=0 → P0 and α=1 → V bit-exactly; inference only if α≠1)."""
        if not (alpha == alpha and abs(alpha) < float("inf")):
            raise ValueError(f"scale: alpha must be finite, got {alpha}")
        self._set(True, float(alpha))

    def unmerge(self) -> None:
        """Restore P0 on S0 from the stored base values (never by subtraction)."""
        self._set(False, self.entries[0].param.alpha)

    def merge(self) -> None:
        """Write the patch (at the current scale) back into the weights."""
        self._set(True, self.entries[0].param.alpha)

    disable = unmerge
    enable = merge

    @property
    def merged(self) -> bool:
        return self.entries[0].param.enabled

    def merge_and_unload(self) -> nn.Module:
        """Bake the current patch into the weights, remove every parametrization, restore flags/keys."""
        self._check_live()
        self.sync()
        for e in self.entries:
            if isinstance(e.param, MaskedDenseParametrization):
                e.param.unhook()
            parametrize.remove_parametrizations(e.module, e.attr, leave_parametrized=False)
        for e in self.entries:
            order = self._param_order.get(id(e.module))
            if order is not None and list(e.module._parameters) != order:
                e.module._parameters = {k: e.module._parameters[k] for k in order}
        for name, p in self.model.named_parameters():
            if name in self._requires_grad:
                p.requires_grad_(self._requires_grad[name])
            p.grad = None
        self._unloaded = True
        return self.model

    def delta(self):
        """The patch as a :class:`fourfold.sara.io.SaraDelta` (indices + fine-tuned values + P0)."""
        from fourfold.sara.io import SaraDelta

        self.sync()
        return SaraDelta.from_handle(self)

    def save_pretrained(self, directory: str | Path) -> Path:
        """``adapter_config.json`` + ``adapter_model.safetensors`` (indices + values + fingerprint)."""
        from fourfold.sara.io import save_adapter

        return save_adapter(self, directory)

    # inspection ------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counts per tensor and the share of S0 whose current |value| is still below θ."""
        self.sync()
        rows = []
        below = 0
        for e in self.entries:
            full = e.param.full_values(e.base)
            n_below = int((full.abs() < self.threshold).sum())
            below += n_below
            rows.append(
                {
                    "name": e.name,
                    "shape": list(e.param.shape),
                    "numel": int(torch.Size(e.param.shape).numel()),
                    "support": e.param.num_support,
                    "active": e.param.num_active,
                    "below_threshold": n_below,
                }
            )
        total = sum(p.numel() for p in self._base_params())
        k = self.num_support()
        return {
            "threshold": self.threshold,
            "num_params": total,
            "support": k,
            "active": self.num_trainable(),
            "share_of_support_below_threshold": below / max(k, 1),
            "tensors": rows,
        }

    def _base_params(self) -> list[torch.Tensor]:
        out, seen = [], set()
        for name, p in self.model.named_parameters():
            if name.endswith(".values") and ".parametrizations." in name:
                continue
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Handle-level training state (counters) for exact resume; tensors live in the model state_dict."""
        return {"step": self.step, "rank_draws": self.rank_draws, "ppa_done": list(self.ppa_done)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.rank_draws = int(state["rank_draws"])
        self.ppa_done = [int(s) for s in state["ppa_done"]]

    def _check_live(self) -> None:
        if self._unloaded:
            raise RuntimeError("this SaraHandle was unloaded (merge_and_unload); wrap the model again")

    def __repr__(self) -> str:
        return (
            f"SaraHandle(tensors={len(self.entries)}, support={self.num_support():,}, "
            f"active={self.num_trainable():,}, θ={self.threshold:.4g}, backend={self.config.backend!r})"
        )
