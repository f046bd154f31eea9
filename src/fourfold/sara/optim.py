"""``SaraAdamW``: the paper's "one line" form (§4.4): replace the optimizer, keep the training loop.

```python
opt = sara.SaraAdamW(unet, threshold=2e-3, progressive_iter=2500, lambda_rank=5e-3)
```
Wraps ``model`` in place (:func:`fourfold.sara.wrap`), optimises only the sparse values with AdamW
(betas 0.9/0.999, eps 1e-8, weight decay 1e-2 on the values, lr from Eq. 12), adds the nuclear-norm
gradient λ·∂‖P_S‖_*/∂values inside ``step`` (the same gradient as adding L_rank to the loss, without
rebuilding the model graph — official defect 5), and runs PPA after step ``progressive_iter``.
Unlike the handle API, the rank gradient is added after any clipping the loop did.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fourfold.sara.config import SaraConfig
from fourfold.sara.handle import wrap


class SaraAdamW(torch.optim.AdamW):
    """AdamW over a SaRA-wrapped model; ``.handle`` gives save/merge/stats."""

    def __init__(
        self,
        model: nn.Module,
        threshold: float | None = None,
        *,
        fraction: float | None = None,
        progressive_iter: int | None = None,
        lambda_rank: float = 5e-3,
        lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        **sara_kwargs: Any,
    ) -> None:
        if progressive_iter is not None and progressive_iter <= 0:
            raise ValueError(
                f"SaraAdamW.progressive_iter must be a positive step or None, got {progressive_iter}"
            )
        config = SaraConfig(
            threshold=threshold,
            fraction=fraction,
            lambda_rank=lambda_rank,
            progressive_at=[progressive_iter] if progressive_iter else None,
            lr=lr,
            **sara_kwargs,
        )
        self.handle = wrap(model, config)
        super().__init__(
            self.handle.parameters(),
            lr=self.handle.learning_rate(),
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
        )
        self.sara_step = 0

    def step(self, closure=None):  # type: ignore[override]
        params = self.handle.parameters()
        with torch.enable_grad():
            rank = self.handle.rank_loss()
        if rank.requires_grad:
            grads = torch.autograd.grad(rank, params, allow_unused=True)
            for p, g in zip(params, grads, strict=True):
                if g is None:
                    continue
                if p.grad is None:
                    p.grad = g.detach()
                else:
                    p.grad.add_(g)
        loss = super().step(closure)
        self.sara_step += 1
        self.handle.on_step(self, self.sara_step, total_steps=self.sara_step)
        return loss
